"""Device and precision choices, made in one place (style: device/precision are arguments).

`precision="auto"` follows the hardware: fp16 on CUDA (weights converted once; the argmax
agreement with fp32 is measured by benchmarks/gpu_fastpath.py), bf16 on CPUs with native bf16
arithmetic (AVX512-BF16 or AMX-BF16: it halves the time of ViT-L/16 there), fp32 elsewhere
(emulated bf16 is slower than fp32).
"""
from __future__ import annotations

import functools
from typing import Literal, Union

import torch

Precision = Literal["auto", "fp32", "fp16", "bf16"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """A torch.device, with a clear error when CUDA is asked for but absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda' are supported")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (x86 'flags' / Arm 'Features' of /proc/cpuinfo; empty where unreadable)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset(flags)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (x86 avx512_bf16 / amx_bf16 flags, Arm bf16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the default for `device`; checks that an explicit choice can run there."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (CPU fp16 is emulated and slow); "
                         f"on {device} use 'bf16' or 'fp32'")
    return precision
