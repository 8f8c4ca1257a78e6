"""The text-independent image path (frame -> unit-norm pixel embeddings), made fast.

Pieces, each optional and each measured in benchmarks/ (docs/performance.md):
- `convert_image_path`: the backbone and decoder weights converted once to fp16/bf16 (not autocast
  on every call); the text tower and the spatial head block stay float32.
- `ImagePath`: channels-last, the linear layers prepacked for oneDNN on the CPU (prepack.py), the
  ViT's attention through a bf16 kernel on avx512_bf16 CPUs (cpu_attention.py),
  `torch.compile` of `LSegNet.embed` (fixed input size), and CUDA graphs replayed per input shape
  (`StaticShapeRunner`). The label step after it (einsum with the
  text, upsampling, argmax) stays eager, so a new label set never recompiles.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .cpu_attention import use_kernel_attention
from .heap import trim_heap
from .prepack import pack_linears

log = logging.getLogger(__name__)


def image_modules(net) -> List[torch.nn.Module]:
    """The modules of the image path (backbone, decoder without the label-space head block)."""
    return [net.pretrained] + [m for name, m in net.scratch.named_children() if name != "head_block"]


def image_dtype(net) -> torch.dtype:
    return next(net.pretrained.parameters()).dtype


def convert_image_path(net, dtype: torch.dtype) -> None:
    """Convert the image path's weights to `dtype` in place, once.

    A net converted to fp16/bf16 cannot go back to exact fp32: a second Predictor asking for
    another precision on the same net is refused with a clear error instead of computing
    silently at the wrong precision."""
    have = image_dtype(net)
    if have == dtype:
        return
    if have != torch.float32:
        raise ValueError(f"this LSegNet's image weights were already converted to {have} (by another Predictor); "
                         f"build or load the net again for {dtype}")
    for m in image_modules(net):
        m.to(dtype)
    log.info("image path weights converted to %s", dtype)


class StaticShapeRunner:
    """Runs `fn` on static input/output buffers, one per input shape; on CUDA, replays a CUDA graph.

    With `capture=False` (the CPU, and tests there) the same buffer logic runs without a graph,
    so everything but the capture itself is exercised on any machine. The output is a static
    buffer, overwritten by the next call: callers use it before calling again."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], capture: bool, warmup: int = 2) -> None:
        if capture and not torch.cuda.is_available():
            raise ValueError("CUDA graphs need a CUDA device")
        self.fn, self.capture, self.warmup = fn, capture, warmup
        self._entries: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor, Optional[object]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _build(self, x: torch.Tensor):
        static_in = x.clone()
        if not self.capture:
            return static_in, self.fn(static_in), None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph (cuDNN/cuBLAS choices, compile)
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        log.info("captured a CUDA graph for input %s", tuple(x.shape))
        return static_in, static_out, graph

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._build(x)
            if entry[2] is None:
                return entry[1]
        static_in, static_out, graph = entry
        static_in.copy_(x)
        if graph is None:
            return self.fn(static_in)
        graph.replay()
        return static_out


class ImagePath:
    """frame batch (B, 3, H, W), already in the compute dtype -> (B, D, H/2, W/2) float32 embeddings."""

    def __init__(self, net, device: torch.device, dtype: torch.dtype,
                 channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False,
                 prepack: bool = False, cpu_attention: bool = False) -> None:
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, not {device}")
        self.net, self.device, self.dtype = net, device, dtype
        self.channels_last = channels_last
        for m in image_modules(net):  # both ways: a net another Predictor made channels-last is restored
            m.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        if prepack:
            n = pack_linears(image_modules(net))
            if n:
                log.info("%d linear layers prepacked for oneDNN (%s)", n, dtype)
        self.kernel_attention = use_kernel_attention(image_modules(net)) if cpu_attention else 0
        if self.kernel_attention:
            log.info("%d attention layers use the bf16 CPU kernel", self.kernel_attention)
        if device.type == "cpu":
            trim_heap()  # the weights replaced by conversion and packing
        fn: Callable[[torch.Tensor], torch.Tensor] = net.embed
        self.compiled = compile
        if compile:
            # dynamic=False: one specialised graph per input shape (a fixed camera size compiles once).
            # On the CPU, inductor's freezing (weights as constants, prepacked for oneDNN) is what
            # makes compile pay: measured x1.09-1.11 (ViT-L/16) and x1.06-1.10 (ResNet-101) in fp32,
            # exact to 5e-6, against x0.94-0.99 without it. The weights must not change afterwards.
            fn = torch.compile(fn, dynamic=False, options={"freezing": True} if device.type == "cpu" else None)
        self._fn = fn
        self.runner = StaticShapeRunner(self._call, capture=True) if cuda_graphs else None

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.runner(x) if self.runner is not None else self._call(x)
