"""The Predictor's options: what a user asks for (`PredictorOptions`, None = automatic) and what runs
(`ResolvedOptions`), with every automatic choice and every rule about which option applies on which
device and precision made here, once.

| option        | automatic choice (None / "auto")                     | allowed                                 |
|---------------|------------------------------------------------------|-----------------------------------------|
| precision     | fp16 on CUDA; bf16 on CPUs with native bf16; fp32    | fp16 on CUDA only                       |
| channels_last | on the CPU (oneDNN's convolutions need no reorders)  | anywhere                                |
| prepack       | on the CPU when this build packs the dtype, no compile | CPU, eager (compile packs its own)    |
| cpu_attention | bf16 on the CPU without compile                      | the same                                |
| cuda_graphs   | off (the node turns it on for CUDA: fast_path)       | CUDA                                    |
| compile       | off                                                  | anywhere; on CUDA it also compiles the  |
|               |                                                      | post-processing (postprocess.py)        |
| input_size    | none: each batch at its own padded size              | (H, W), multiples of 32, >= 32          |
| max_side      | none: frames at full resolution                      | >= 32                                   |
| onnx          | none: the image path in torch                        | an exported file (onnx_runtime.py): then|
|               |                                                      | fp32 label step, no torch fast path     |

The plain eager path the benchmarks compare against is `PredictorOptions(precision="fp32",
channels_last=False, prepack=False)` (cpu_attention acts only in bf16).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from .devices import DTYPES, Precision, resolve_precision
from .prepack import prepack_supported

if TYPE_CHECKING:
    from .onnx_runtime import OnnxOptions


@dataclass(frozen=True)
class PredictorOptions:
    """What a Predictor should do; None means "choose for the device" (the table in the module docstring).

    Args:
        precision: "auto", "fp32", "fp16" (CUDA) or "bf16". Lower precisions convert the net's image
            path in place (the Predictor owns the net it is given).
        max_side: shrink frames whose long side is larger (results still at the input resolution).
        input_size: (H, W), multiples of 32: every batch is padded to exactly this size (frames that do
            not fit are shrunk to fit), so compiled code and CUDA graphs see one shape.
        compile: torch.compile the image path (and on CUDA the post-processing); warm up with `warmup()`.
        cuda_graphs: replay the image path as a CUDA graph per input shape (CUDA only).
        channels_last: NHWC memory format for the image path's convolutions.
        prepack: the image path's linear layers prepacked for oneDNN, GELU fused (prepack.py; exact).
        cpu_attention: the ViT's attention through the bf16 kernel for avx512_bf16 CPUs (cpu_attention.py).
        cache_size: encoded label sets kept (LRU).
        profile: record per-stage seconds of each call in `Predictor.stage_times` (CUDA: events, no syncs).
        onnx: run the image path in ONNX Runtime from an exported file (`OnnxOptions`, onnx_runtime.py)
            instead of torch; its input size becomes `input_size`, and the torch fast-path switches
            (precision other than fp32, compile, cuda_graphs, prepack, cpu_attention) are refused.
    """

    precision: Precision = "auto"
    max_side: Optional[int] = None
    input_size: Optional[Tuple[int, int]] = None
    compile: bool = False
    cuda_graphs: bool = False
    channels_last: Optional[bool] = None
    prepack: Optional[bool] = None
    cpu_attention: Optional[bool] = None
    cache_size: int = 16
    profile: bool = False
    onnx: Optional["OnnxOptions"] = None

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_(self, **changes) -> "PredictorOptions":
        """A copy with `changes` (unknown names are refused with the list of valid ones)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown Predictor option(s) {', '.join(unknown)}; options: {', '.join(self.names())}")
        return replace(self, **changes)

    def for_onnx(self, input_size: Tuple[int, int]) -> "PredictorOptions":
        """These options with the image path in ONNX Runtime at the file's `input_size`: the torch
        fast-path switches do not apply (the weights' dtype was chosen at export)."""
        torch_only = [k for k in ("compile", "cuda_graphs", "prepack", "cpu_attention") if getattr(self, k)]
        if torch_only or self.precision not in ("auto", "fp32"):
            raise ValueError("with onnx the image path runs in ONNX Runtime: precision, compile, cuda_graphs, prepack "
                             "and cpu_attention are torch settings (the weights' dtype is chosen at export); got "
                             f"{', '.join(torch_only + ([f'precision={self.precision}'] if self.precision not in ('auto', 'fp32') else []))}")
        return replace(self, precision="fp32", input_size=input_size, channels_last=False, prepack=False,
                       cpu_attention=False)

    def resolve(self, device: torch.device) -> "ResolvedOptions":
        """The concrete choices for `device`; raises ValueError naming an option that cannot apply."""
        precision = resolve_precision(self.precision, device)
        dtype = DTYPES[precision]
        cpu = device.type == "cpu"
        if self.max_side is not None and self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")
        size = None
        if self.input_size is not None:
            size = (int(self.input_size[0]), int(self.input_size[1]))
            if min(size) < 32 or size[0] % 32 or size[1] % 32:
                raise ValueError(f"input_size must be (H, W), multiples of 32, got {self.input_size}")
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, not {device}")
        if self.prepack and (not cpu or self.compile):
            raise ValueError("prepack is for the eager CPU path (not with compile, which packs its own weights, "
                             f"nor on {device})")
        if self.prepack and not prepack_supported(dtype):
            raise ValueError(f"prepack: this torch build or CPU has no oneDNN packed linear for {dtype}")
        bf16_eager_cpu = cpu and not self.compile and dtype == torch.bfloat16
        if self.cpu_attention and not bf16_eager_cpu:
            raise ValueError("cpu_attention is for bf16 on the CPU without compile")
        return ResolvedOptions(
            precision=precision, dtype=dtype, max_side=self.max_side, input_size=size, compile=self.compile,
            cuda_graphs=self.cuda_graphs,
            channels_last=cpu if self.channels_last is None else bool(self.channels_last),
            prepack=(cpu and not self.compile and prepack_supported(dtype)) if self.prepack is None else self.prepack,
            cpu_attention=bf16_eager_cpu if self.cpu_attention is None else bool(self.cpu_attention),
            compile_post=self.compile and device.type == "cuda", cache_size=self.cache_size, profile=self.profile)


@dataclass(frozen=True)
class ResolvedOptions:
    """The choices a Predictor runs with (PredictorOptions.resolve); no None left."""

    precision: str
    dtype: torch.dtype
    max_side: Optional[int]
    input_size: Optional[Tuple[int, int]]
    compile: bool
    cuda_graphs: bool
    channels_last: bool
    prepack: bool
    cpu_attention: bool  # wanted; Predictor.cpu_attention says whether the kernel runs
    compile_post: bool  # the post-processing compiled too (CUDA)
    cache_size: int
    profile: bool
