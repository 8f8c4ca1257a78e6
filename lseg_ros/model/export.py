"""Export the text-independent image path (`LSegNet.embed`) to ONNX, checked before it is kept.

Writes DIR/model.onnx and its description DIR/model.json (onnx_format.py). The graph: a (B, 3, H, W)
normalised float32 batch (or, with input_kind="uint8", (B, H, W, 3) RGB frames normalised inside the
graph) -> (B, D, H/2, W/2) float32 unit-norm pixel embeddings. Fixed input size and batch by default
(what TensorRT builds best); `dynamic=True` leaves batch, height and width free. Weights fp32, or fp16
(the graph still takes and returns float32).

The check, before anything is kept: ONNX Runtime's CPU provider runs the written file on a real image
and is compared with the PyTorch fp32 path on the same input: per-pixel cosine similarity of the
embeddings (min, mean) and the share of pixels whose label is the same with a fixed set of labels
(the label step applied to both). Below `min_cosine` or `min_agreement` the export is refused and
nothing is written. Needs torch's ONNX exporter (onnx, onnxscript) and onnxruntime.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .fastpath import convert_image_path, image_dtype, image_modules
from .onnx_format import (INPUT_KINDS, INPUT_NAME, OUTPUT_NAME, WEIGHT_DTYPES, ExportInfo, OnnxModelError,
                          image_fingerprint, sidecar_path)
from .onnx_runtime import import_onnxruntime
from .predictor import check_image, normalize_image
from .prepack import unpack_linears
from .text import encode_label_set

log = logging.getLogger(__name__)

# Labels the write-time check compares masks with (a photo of people indoors or outdoors has several).
CHECK_LABELS = ("person", "face", "hair", "shirt", "jacket", "tie", "flag", "wall", "floor", "ceiling", "sky",
                "tree", "grass", "road", "building", "car", "chair", "table", "window", "other")
DEFAULT_TOLERANCE = {"fp32": (0.999, 0.999), "fp16": (0.99, 0.99)}  # (min cosine, min mask agreement)


class ExportCheckError(ValueError):
    """The written graph does not reproduce the PyTorch path within the tolerance: nothing was kept."""


@dataclass(frozen=True)
class ExportOptions:
    size: Tuple[int, int] = (480, 640)  # (H, W), multiples of 32: the input size (the example one if dynamic)
    batch: int = 1
    dynamic: bool = False  # batch, height and width free
    weights_dtype: str = "fp32"
    input_kind: str = "normalized"
    opset: Optional[int] = None  # None: the exporter's default
    min_cosine: Optional[float] = None  # None: DEFAULT_TOLERANCE of the dtype
    min_agreement: Optional[float] = None
    labels: Tuple[str, ...] = CHECK_LABELS

    def __post_init__(self) -> None:
        h, w = self.size
        if min(h, w) < 32 or h % 32 or w % 32:
            raise ValueError(f"size must be HxW, multiples of 32 (>= 32), got {h}x{w}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weights_dtype!r}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if not self.labels:
            raise ValueError("the check needs at least one label")

    def tolerance(self) -> Tuple[float, float]:
        cos, agree = DEFAULT_TOLERANCE[self.weights_dtype]
        return (cos if self.min_cosine is None else self.min_cosine,
                agree if self.min_agreement is None else self.min_agreement)


@dataclass
class ExportResult:
    onnx_path: str
    sidecar_path: str
    info: ExportInfo
    export_seconds: float
    check: Dict[str, object] = field(default_factory=dict)


class _Graph(nn.Module):
    """What is exported: LSegNet.embed, with the input cast (and for uint8 frames, normalised) first."""

    def __init__(self, net, dtype: torch.dtype, uint8: bool) -> None:
        super().__init__()
        self.net, self.dtype, self.uint8 = net, dtype, uint8
        self.register_buffer("mean", torch.tensor(net.config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(net.config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8:
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return self.net.embed(x.to(self.dtype))


def _frame(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA))


def _check_sizes(options: ExportOptions) -> List[Tuple[int, Tuple[int, int]]]:
    """(batch, (H, W)) inputs the check runs: the export's; with dynamic axes also batch 2 at another size."""
    runs = [(options.batch, options.size)]
    if options.dynamic:
        h, w = options.size
        runs.append((2, (h - 32 if h > 32 else h + 32, w + 32)))
    return runs


def check_export(net, onnx_path: str, options: ExportOptions, image: np.ndarray) -> Dict[str, object]:
    """ONNX Runtime (CPU provider) against `net`'s fp32 PyTorch path on `image` (HxWx3 uint8 RGB);
    raises ExportCheckError with the figures when below the tolerance."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    text = encode_label_set(net.text, list(options.labels)).embeddings
    cos_min, cos_sum, n_pix, agree, n_mask, worst = 1.0, 0.0, 0, 0, 0, 0.0
    for batch, size in _check_sizes(options):
        frames = [_frame(image if i % 2 == 0 else image[:, ::-1], size) for i in range(batch)]
        x = torch.cat([normalize_image(f, net.config.mean, net.config.std) for f in frames])
        feed = np.stack(frames) if options.input_kind == "uint8" else x.numpy()
        with torch.inference_mode():
            ref = net.embed(x)
            got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: feed})[0])
            if got.shape != ref.shape:
                raise ExportCheckError(f"the graph returned {tuple(got.shape)} for input {tuple(x.shape)}, "
                                       f"PyTorch {tuple(ref.shape)}")
            cos = (ref * got).sum(1)
            same = net.score(ref, text).argmax(1) == net.score(got, text).argmax(1)
        cos_min = min(cos_min, cos.min().item())
        cos_sum += cos.sum().item()
        n_pix += cos.numel()
        agree += int(same.sum().item())
        n_mask += same.numel()
        worst = max(worst, (ref - got).abs().max().item())
    min_cos, min_agree = options.tolerance()
    result = {"provider": "CPUExecutionProvider", "inputs": [[b, *s] for b, s in _check_sizes(options)],
              "labels": len(options.labels), "cosine_min": cos_min, "cosine_mean": cos_sum / n_pix,
              "mask_agreement": agree / n_mask, "max_abs_diff": worst,
              "min_cosine": min_cos, "min_agreement": min_agree}
    if result["cosine_mean"] < min_cos or result["mask_agreement"] < min_agree:
        raise ExportCheckError(f"the exported graph does not reproduce the PyTorch path: cosine mean "
                               f"{result['cosine_mean']:.6f} (min {cos_min:.6f}, needed {min_cos}), mask agreement "
                               f"{result['mask_agreement']:.5f} (needed {min_agree}); nothing written")
    return result


def export_image_path(net, out_dir, options: ExportOptions, check_image_rgb: np.ndarray, name: str = "model",
                      source: str = "") -> ExportResult:
    """Export `net`'s image path to out_dir/name.onnx + name.json after checking it on `check_image_rgb`
    (HxWx3 uint8 RGB, a real photo). `net` must hold fp32 weights; it is moved to the CPU (linear layers a
    CPU Predictor prepacked are restored, exactly). `source`: the weights file's name, recorded in the
    description."""
    import lseg_ros

    check_image(check_image_rgb)
    if image_dtype(net) != torch.float32:
        raise ValueError(f"the net's image weights are {image_dtype(net)}: export needs the fp32 weights "
                         "(load them again)")
    net = net.to("cpu").eval()
    unpack_linears(image_modules(net))
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(os.fspath(out_dir), name + ".onnx")
    part = final + ".part"
    graph_net = net
    if options.weights_dtype == "fp16":
        graph_net = copy.deepcopy(net)
        convert_image_path(graph_net, torch.float16)
    dtype = torch.float16 if options.weights_dtype == "fp16" else torch.float32
    graph = _Graph(graph_net, dtype, options.input_kind == "uint8").eval()
    h, w = options.size
    example = (torch.zeros(options.batch, h, w, 3, dtype=torch.uint8) if options.input_kind == "uint8"
               else torch.zeros(options.batch, 3, h, w))
    kwargs = {}
    if options.dynamic:
        free = torch.export.Dim.DYNAMIC
        axes = (0, 1, 2) if options.input_kind == "uint8" else (0, 2, 3)
        kwargs["dynamic_shapes"] = ({a: free for a in axes},)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, (example,), None, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamo=True, opset_version=options.opset,
                                        verbose=False, **kwargs)
            program.save(part, external_data=False)
        seconds = time.perf_counter() - t0
        log.info("exported %s in %.1f s; checking it against PyTorch", final, seconds)
        check = check_export(net, part, options, check_image_rgb)
        info = ExportInfo(config=net.config, input_size=None if options.dynamic else options.size,
                          batch=None if options.dynamic else options.batch, input_kind=options.input_kind,
                          weights_dtype=options.weights_dtype, fingerprint=image_fingerprint(net), source=source,
                          project_version=lseg_ros.__version__, torch_version=torch.__version__,
                          opset=int(program.model.opset_imports.get("", 0)), check=check)
        info.write(final)
        os.replace(part, final)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return ExportResult(final, sidecar_path(final), info, seconds, check)


__all__ = ["ExportOptions", "ExportResult", "ExportCheckError", "OnnxModelError", "export_image_path",
           "check_export", "CHECK_LABELS"]
