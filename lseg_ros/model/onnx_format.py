"""What an exported image path holds: the JSON written beside model.onnx, and the weights fingerprint
that ties the file to the checkpoint it came from (docs/deployment.md).

The ONNX graph is the text-independent image path only (`LSegNet.embed`): a (B, 3, H, W) frame ->
(B, D, H/2, W/2) float32 unit-norm pixel embeddings. The label step (cosine with the text embeddings,
x 1/0.07, the optional spatial head, x2 upsampling) stays outside, so a new label set never rebuilds
an engine. No onnx or onnxruntime import here: the exporter and the runtime both read this.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .config import LSegConfig

FORMAT = "lseg_ros.onnx_image_path"
FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "image", "embeddings"
INPUT_KINDS = ("normalized", "uint8")
WEIGHT_DTYPES = ("fp32", "fp16")
# The label step's spatial head is not in the graph: a file fits a checkpoint whatever these are.
HEAD_FIELDS = ("spatial_block", "block_depth", "activation")


class OnnxModelError(ValueError):
    """An ONNX file, its description or a runtime setting that cannot serve: the message names it."""


def sidecar_path(onnx_path) -> str:
    """model.onnx -> model.json (the description beside it)."""
    root, _ = os.path.splitext(os.fspath(onnx_path))
    return root + ".json"


def image_fingerprint(net) -> str:
    """A short hash of the image path's weights (backbone and decoder, not the text tower or the spatial
    head): names, shapes and about 1024 values of every tensor, as float32. Two checkpoints with other
    weights differ; one checkpoint gives the same fingerprint from its released file, its safetensors
    conversion and on any device. Call it on the fp32 weights (before any conversion)."""
    import numpy as np

    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        if not name.startswith(("pretrained.", "scratch.")) or name.startswith("scratch.head_block."):
            continue
        flat = t.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 1024)][:1024].float().cpu().numpy()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(np.ascontiguousarray(sample, dtype="<f4").tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ExportInfo:
    """The JSON beside model.onnx (`to_dict` is what is written; every key is described there)."""

    config: LSegConfig
    input_size: Optional[Tuple[int, int]]  # (H, W); None: any multiple of 32 (dynamic axes)
    batch: Optional[int]  # None: any batch size
    input_kind: str = "normalized"  # or "uint8": (B, H, W, 3) RGB frames, normalised inside the graph
    weights_dtype: str = "fp32"
    fingerprint: str = ""
    source: str = ""  # the weights file's name ('' = untrained random weights)
    project_version: str = ""
    torch_version: str = ""
    opset: int = 0
    check: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the write-time fidelity check

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights_dtype must be one of {WEIGHT_DTYPES}, got {self.weights_dtype!r}")

    def input_shape(self) -> list:
        """The graph input's shape, names for the dynamic axes."""
        b = self.batch if self.batch is not None else "batch"
        h, w = self.input_size if self.input_size is not None else ("height", "width")
        return [b, h, w, 3] if self.input_kind == "uint8" else [b, 3, h, w]

    def to_dict(self) -> Dict[str, Any]:
        c = self.config
        if self.input_kind == "uint8":
            inp = {"layout": "NHWC", "dtype": "uint8", "channel_order": "rgb",
                   "normalisation": "inside the graph: (x / 255 - mean) / std"}
        else:
            inp = {"layout": "NCHW", "dtype": "float32", "channel_order": "rgb",
                   "normalisation": "(x / 255 - mean) / std, done by the caller",
                   "padding": "bottom/right with -mean/std (black), as the reference pads"}
        h2 = None if self.input_size is None else [self.input_size[0] // 2, self.input_size[1] // 2]
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "project_version": self.project_version,
            "architecture": c.backbone if c.backbone == "resnet" else c.vit_name,
            "config": json.loads(c.to_json()),
            "input": {"name": INPUT_NAME, "kind": self.input_kind, "shape": self.input_shape(),
                      "size": None if self.input_size is None else list(self.input_size), "batch": self.batch,
                      "mean": list(c.mean), "std": list(c.std), **inp},
            "output": {"name": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32",
                       "shape": [self.input_shape()[0], c.out_dim, *(h2 or ["height/2", "width/2"])],
                       "content": "unit-norm (L2 over channels) pixel embeddings at half the input resolution"},
            "label_step": "outside the graph: logits = logit_scale * <embeddings, unit-norm text embeddings>, "
                          "optional spatial head, bilinear x2 (align_corners=True); lseg_ros.model.LSegNet.score",
            "weights": {"dtype": self.weights_dtype, "fingerprint": self.fingerprint, "source": self.source},
            "exporter": {"torch": self.torch_version, "opset": self.opset},
            "check": self.check,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExportInfo":
        if d.get("format") != FORMAT:
            raise ValueError(f"not an lseg_ros ONNX description (format {d.get('format')!r}, expected {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {d.get('format_version')!r}; this code reads {FORMAT_VERSION}")
        inp, weights = d["input"], d["weights"]
        size = inp.get("size")
        return cls(config=LSegConfig.from_json(json.dumps(d["config"])),
                   input_size=None if size is None else (int(size[0]), int(size[1])),
                   batch=None if inp.get("batch") is None else int(inp["batch"]), input_kind=inp["kind"],
                   weights_dtype=weights["dtype"], fingerprint=weights.get("fingerprint", ""),
                   source=weights.get("source", ""), project_version=d.get("project_version", ""),
                   torch_version=d.get("exporter", {}).get("torch", ""),
                   opset=int(d.get("exporter", {}).get("opset", 0)), check=d.get("check", {}))

    def write(self, onnx_path) -> str:
        path = sidecar_path(onnx_path)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        return path

    def mismatches(self, config: LSegConfig, fingerprint: str) -> list:
        """Why this file cannot serve a network of `config` with weights `fingerprint` ([] if it can)."""
        ours = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in HEAD_FIELDS}
        theirs = {k: v for k, v in dataclasses.asdict(config).items() if k not in HEAD_FIELDS}
        diff = [f"{k} {ours[k]!r} (file) vs {theirs[k]!r} (weights)" for k in ours if ours[k] != theirs[k]]
        if diff:
            return ["another architecture: " + "; ".join(diff[:6])]
        if self.fingerprint and fingerprint and self.fingerprint != fingerprint:
            return [f"other weights: exported from {self.source or 'untrained random weights'!r} (fingerprint "
                    f"{self.fingerprint}), the loaded weights have fingerprint {fingerprint}"]
        return []


_ONNX_FIRST_BYTE = b"\x08"  # a serialised ModelProto starts with field 1, ir_version (varint)


def read_export_info(onnx_path) -> ExportInfo:
    """The description of an exported file, after checking that the file looks like ONNX.
    `OnnxModelError` naming the file for: missing, a directory, not ONNX, no/bad description."""
    path = os.fspath(onnx_path)
    if not os.path.exists(path):
        raise OnnxModelError(f"ONNX model {path!r} does not exist")
    if os.path.isdir(path):
        raise OnnxModelError(f"ONNX model {path!r} is a directory, not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith(_ONNX_FIRST_BYTE):
        raise OnnxModelError(f"{path!r} is not an ONNX model (starts with {head!r}); export one with "
                             "lseg-export WEIGHTS -o DIR")
    meta = sidecar_path(path)
    if not os.path.isfile(meta):
        raise OnnxModelError(f"{path!r} has no description {meta!r} beside it (lseg-export writes both; the "
                             "runtime needs it to know the architecture, input size and weights)")
    try:
        with open(meta) as f:
            return ExportInfo.from_dict(json.load(f))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OnnxModelError(f"cannot read {meta!r} (the description of {path!r}): {type(e).__name__}: {e}") from None
