"""The process heap (glibc): when freed memory goes back to the system, and when it is kept.

By default glibc serves every allocation above 128 KB with its own mmap and unmaps it when freed, and
trims the heap's top above 128 KB of free space. A camera node allocates and frees megabytes per frame
(a 640x480 float32 image is 1.2 MB; an output message another copy), so every frame's memory is fresh
pages, each first touch a page fault: measured on the 2-core VM, building one 1.2 MB image message took
1.5 ms that way and 0.2 ms with freed blocks kept for reuse (`keep_freed_memory`). After the weights
are converted or packed, `trim_heap` gives the freed weights back explicitly. Torch-free: lseg_node
calls `keep_freed_memory` before its heavy imports. Elsewhere than glibc both do nothing.
"""
from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Serve allocations below `mmap_threshold` from the heap and keep up to `trim_threshold` of freed
    heap for reuse (per-frame buffers then reuse warm pages). True when glibc took the settings."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def trim_heap() -> None:
    """Give freed heap memory back to the OS: the weights replaced by conversion or packing otherwise
    stay in the process as free heap (measured: 0.6 GB of RSS for ViT-L/16 in bf16)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
