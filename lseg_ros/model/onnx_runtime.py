"""The image path in ONNX Runtime: an exported model.onnx (export.py) run by the TensorRT, CUDA or CPU
execution provider, with the call contract of fastpath.ImagePath: a (B, 3, H, W) normalised batch in,
(B, D, H/2, W/2) float32 unit-norm pixel embeddings out, on the Predictor's device. The label step and
the post-processing after it stay the project's (torch) code, shared with the torch backend.

onnxruntime is optional: `pip install onnxruntime` (CPU) or `onnxruntime-gpu` (CUDA, TensorRT). What
is checked before a session is built, each with a message naming the file or the setting: the file is
ONNX and has its description (onnx_format.py), it was exported from this architecture and these weights
(a fingerprint), for the configured input size, as a normalised-input graph; the providers exist in the
installed onnxruntime; the TensorRT engine cache directory can be written. See docs/deployment.md.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from .fastpath import image_modules
from .onnx_format import INPUT_NAME, OUTPUT_NAME, ExportInfo, OnnxModelError, image_fingerprint, read_export_info

log = logging.getLogger(__name__)

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")  # the first ones the installed onnxruntime offers are used
INSTALL_HINT = ("pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA and TensorRT; on a Jetson the "
                "onnxruntime-gpu wheel built for its JetPack)")


@dataclass(frozen=True)
class OnnxOptions:
    """How to run an exported image path.

    model: path to model.onnx (its description model.json beside it).
    providers: execution providers in order of preference: tensorrt, cuda, cpu (or onnxruntime's full
        names); () = those of DEFAULT_PROVIDERS that the installed onnxruntime offers.
    trt_engine_cache: directory where TensorRT keeps the engines it builds (built once per machine,
        model and input size); checked writable (created if missing); '' = no cache.
    threads: intra-op threads of the CPU provider (0 = onnxruntime's default, one per core).
    keep_torch_weights: keep the torch net's image weights (default: emptied, the file holds them;
        the text tower and the spatial head stay).
    """

    model: str
    providers: Tuple[str, ...] = ()
    trt_engine_cache: str = ""
    threads: int = 0
    keep_torch_weights: bool = False


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxModelError(f"the onnxruntime backend needs the onnxruntime package ({e}): {INSTALL_HINT}") from None
    return onnxruntime


def resolve_providers(requested: Tuple[str, ...], available: List[str], known: List[str]) -> List[str]:
    """Provider names (short or full; () = the defaults) -> onnxruntime's names, each one an execution
    provider onnxruntime knows (`known`) and that the installed build has (`available`)."""
    if not requested:
        return [PROVIDERS[p] for p in DEFAULT_PROVIDERS if PROVIDERS[p] in available]
    by_lower = {k.lower(): k for k in known}
    out = []
    for name in requested:
        key = str(name).strip().lower()
        full = PROVIDERS.get(key) or by_lower.get(key) or by_lower.get(key + "executionprovider")
        if full is None:
            raise OnnxModelError(f"providers: {name!r} is not an ONNX Runtime execution provider (use "
                                 f"{', '.join(PROVIDERS)}, or a full name such as CUDAExecutionProvider)")
        if full not in available:
            raise OnnxModelError(f"providers: {name!r} ({full}) is not in the installed onnxruntime, which offers "
                                 f"{', '.join(available)}; for CUDA and TensorRT: {INSTALL_HINT}")
        if full not in out:
            out.append(full)
    return out


def check_cache_dir(path: str) -> str:
    """The TensorRT engine cache directory, created if missing and checked writable (absolute path)."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".lseg_write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise OnnxModelError(f"trt_engine_cache: the TensorRT engine cache directory {path!r} cannot be written "
                             f"({e.strerror or e})") from None
    return path


def fit_input_size(info: ExportInfo, requested: Optional[Tuple[int, int]], path: str) -> Optional[Tuple[int, int]]:
    """The input size to run at: the file's fixed size (which `requested`, if given, must equal), or
    `requested` for a file with dynamic height and width."""
    if info.input_size is None or requested is None or tuple(requested) == info.input_size:
        return info.input_size or (tuple(requested) if requested else None)
    (h, w), (rh, rw) = info.input_size, requested
    raise OnnxModelError(f"{path!r} was exported for input size {h}x{w}, but input_size is {rh}x{rw}: export "
                         f"again with --size {rh}x{rw} (or --dynamic), or set input_size to {h}x{w} (or '')")


def empty_image_weights(net) -> None:
    """Frees the torch image path's weights (backbone, decoder) of `net`: replaced by empty tensors."""
    for m in image_modules(net):
        for t in list(m.parameters()) + list(m.buffers()):
            t.data = t.data.new_empty(0)


def preflight(options: OnnxOptions) -> ExportInfo:
    """The checks that need neither weights nor a session: onnxruntime installed, the file and its
    description, the providers, the engine cache directory. Returns the file's description."""
    ort = import_onnxruntime()
    info = read_export_info(os.path.expanduser(options.model))
    resolve_providers(tuple(options.providers), ort.get_available_providers(), ort.get_all_providers())
    if options.trt_engine_cache:
        check_cache_dir(options.trt_engine_cache)
    return info


class OnnxImagePath:
    """An exported image path in an onnxruntime InferenceSession; see the module docstring.

    Attributes: `info` (the file's description), `input_size`, `providers` (in use, best first),
    `provider` (the first), `description` (one line for logs and /diagnostics)."""

    def __init__(self, options: OnnxOptions, info: ExportInfo, device: torch.device,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        ort = import_onnxruntime()
        path = os.path.abspath(os.path.expanduser(options.model))
        if info.input_kind != "normalized":
            raise OnnxModelError(f"{path!r} takes {info.input_kind} frames; the Predictor feeds normalised "
                                 "batches: export with --input normalized (the default)")
        self.info, self.path, self.device = info, path, device
        self.input_size = fit_input_size(info, input_size, path)
        wanted = resolve_providers(tuple(options.providers), ort.get_available_providers(), ort.get_all_providers())
        cache = check_cache_dir(options.trt_engine_cache) if options.trt_engine_cache else ""
        index = device.index or 0
        fp16 = info.weights_dtype == "fp16"
        provider_options = [self._provider_options(p, cache, index, fp16) for p in wanted]
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(options.threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy wait on shared cores
        try:
            self.session = ort.InferenceSession(path, so, providers=wanted, provider_options=provider_options)
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise OnnxModelError(f"onnxruntime cannot load {path!r}: {type(e).__name__}: {e}") from None
        self.providers = list(self.session.get_providers())
        if options.providers and self.providers[0] != wanted[0]:
            raise OnnxModelError(f"providers: {wanted[0]} was asked for first but onnxruntime could not start it "
                                 f"(it runs {', '.join(self.providers)}; see its log above)")
        self.provider = self.providers[0]
        self._check_graph()
        self._bind = device.type == "cuda" and self.provider != PROVIDERS["cpu"]
        self.description = (f"onnxruntime {ort.__version__} {self.provider} ({os.path.basename(path)}, "
                            f"{info.weights_dtype} weights)")
        log.info("image path: %s", self.description)

    @classmethod
    def for_net(cls, options: OnnxOptions, net, device: torch.device,
                input_size: Optional[Tuple[int, int]] = None) -> "OnnxImagePath":
        """Checks that the file was exported from `net`'s architecture and image weights (refused with
        the reason otherwise), builds the session, then empties the net's torch image weights unless
        `options.keep_torch_weights`."""
        path = os.path.abspath(os.path.expanduser(options.model))
        info = read_export_info(path)
        problems = info.mismatches(net.config, image_fingerprint(net))
        if problems:
            raise OnnxModelError(f"{path!r} does not fit the loaded weights: {problems[0]}")
        runner = cls(options, info, torch.device(device), input_size)
        if not options.keep_torch_weights:
            empty_image_weights(net)
        return runner

    @staticmethod
    def _provider_options(name: str, cache: str, device_index: int, fp16: bool) -> dict:
        if name == PROVIDERS["tensorrt"]:
            opts = {"device_id": device_index, "trt_fp16_enable": fp16}  # an fp16 export builds an fp16 engine
            if cache:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache, trt_timing_cache_enable=True,
                            trt_timing_cache_path=cache)
            return opts
        if name == PROVIDERS["cuda"]:
            return {"device_id": device_index}
        return {}

    def _check_graph(self) -> None:
        """The graph's input and output against its description (a description of another file)."""
        (inp,), outs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        declared = [d if isinstance(d, int) else None for d in self.info.input_shape()]
        graph = [d if isinstance(d, int) else None for d in inp.shape]
        if inp.name != INPUT_NAME or OUTPUT_NAME not in outs or graph != declared:
            raise OnnxModelError(f"{self.path!r}: the graph (input {inp.name} {inp.shape}, outputs {outs}) is not "
                                 f"the one its description declares ({INPUT_NAME} {self.info.input_shape()})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got {tuple(x.shape)}")
        size = self.info.input_size
        if size is not None and tuple(x.shape[2:]) != size:
            raise ValueError(f"{self.path!r} was exported for {size[0]}x{size[1]} inputs, got "
                             f"{x.shape[2]}x{x.shape[3]} (a Predictor with this image path pads to that size)")
        x = x.to(self.device, torch.float32).contiguous()
        step = self.info.batch
        if step is None or x.shape[0] == step:
            return self._run(x)
        outs = []
        for i in range(0, x.shape[0], step):  # a fixed-batch file runs a larger batch in chunks
            chunk = x[i:i + step]
            if chunk.shape[0] < step:
                chunk = torch.cat([chunk, chunk.new_zeros((step - chunk.shape[0], *chunk.shape[1:]))])
            outs.append(self._run(chunk))
        return torch.cat(outs)[:x.shape[0]]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self._bind:
            out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0]
            return torch.from_numpy(out).to(self.device)
        # CUDA and TensorRT providers on a CUDA Predictor: input and output stay on the GPU (I/O binding).
        b, _, h, w = x.shape
        out = torch.empty((b, self.info.config.out_dim, h // 2, w // 2), dtype=torch.float32, device=self.device)
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input(INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # x is written before onnxruntime reads it
        self.session.run_with_iobinding(binding)
        return out
