"""Host <-> device transfers for the pipelined Predictor: a small ring of pinned buffers, copies that
do not block the host, and the handle a submitted batch returns.

One slot per batch in flight (`HostRing`, 3 by default: one batch being uploaded while one computes and
one is read back). A slot holds a pinned input buffer, its device twin and a pinned output buffer,
each grown when a batch needs more and reused afterwards. On CUDA:
- frames are packed into the slot's pinned input (the one host copy; it also makes strided frames
  contiguous) and sent on a copy stream of their own, so the upload of batch N+1 overlaps the forward of
  batch N; the compute stream waits for the copy's event, not the host;
- every result of a batch is copied into the slot's pinned output with non-blocking copies queued on
  the compute stream after the work, followed by one event: `PendingBatch.result()` waits on that
  event only, then copies the arrays out of the slot;
- a slot is reused only once its previous batch's event has completed (the host waits there, so at
  most `depth` batches are ever queued on the device).
On the CPU there is nothing to transfer: frames are used in place and results are ready at submit
(`pack=True` runs the packing and slot logic there too, into plain memory: how the tests check it
on machines without a GPU).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

_ALIGN = 64  # bytes: every array in a slot's output buffer starts aligned (any dtype's view works)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class _Slot:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pin_in: Optional[torch.Tensor] = None
        self.dev_in: Optional[torch.Tensor] = None
        self.pin_out: Optional[torch.Tensor] = None
        self.uploaded = torch.cuda.Event() if device.type == "cuda" else None
        self.finished = torch.cuda.Event() if device.type == "cuda" else None
        self.used = False  # `finished` was recorded at least once
        self.generation = 0

    def buffer(self, name: str, nbytes: int, pinned: bool) -> torch.Tensor:
        have = getattr(self, name)
        if have is None or have.numel() < nbytes:
            size = max(nbytes, int(1.25 * have.numel()) if have is not None else 0)
            if pinned:
                have = torch.empty(size, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
            else:
                have = torch.empty(size, dtype=torch.uint8, device=self.device)
            setattr(self, name, have)
        return have[:nbytes]


class HostRing:
    """`depth` slots used in turn; see the module docstring."""

    def __init__(self, device: torch.device, depth: int = 3, pack: Optional[bool] = None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.device = device
        self.cuda = device.type == "cuda"
        self.pack = self.cuda if pack is None else bool(pack)
        if self.cuda and not self.pack:
            raise ValueError("on CUDA the ring always packs (pack=False is for the CPU)")
        self._slots = [_Slot(device) for _ in range(depth)]
        self._next = 0
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None

    def acquire(self) -> _Slot:
        """The next slot, once its previous batch is done on the device (the host waits here)."""
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.used and self.cuda:
            slot.finished.synchronize()
        slot.generation += 1
        return slot

    def upload(self, slot: _Slot, images: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """HxWx3 uint8 frames -> (h, w, 3) uint8 tensors on the device (views of the slot's buffer).
        On CUDA the compute stream is made to wait for the copy; the host does not wait."""
        if not self.pack:
            return [torch.from_numpy(np.ascontiguousarray(im)) for im in images]
        sizes = [im.size for im in images]
        offsets = np.cumsum([0] + [_aligned(s) for s in sizes])
        host = slot.buffer("pin_in", int(offsets[-1]), pinned=True)
        flat = host.numpy()
        for im, a, n in zip(images, offsets[:-1], sizes):
            flat[a:a + n] = im.reshape(-1)
        dev = host
        if self.cuda:
            dev = slot.buffer("dev_in", int(offsets[-1]), pinned=False)
            with torch.cuda.stream(self.copy_stream):
                dev.copy_(host, non_blocking=True)
                slot.uploaded.record(self.copy_stream)
            torch.cuda.current_stream(self.device).wait_event(slot.uploaded)
        return [dev[a:a + n].view(im.shape) for im, a, n in zip(images, offsets[:-1], sizes)]

    def download(self, slot: _Slot, tensors: Dict[str, torch.Tensor]) -> "Readback":
        """Queues the copies of `tensors` (device) into the slot's pinned output and records the
        slot's event; the Readback turns them into numpy arrays once that event has completed."""
        if not self.pack:
            return Readback({k: t.numpy() for k, t in tensors.items()}, None, None, 0)
        layout: Dict[str, Tuple[int, torch.Tensor]] = {}
        offset = 0
        for key, t in tensors.items():
            layout[key] = (offset, t)
            offset += _aligned(t.numel() * t.element_size())
        host = slot.buffer("pin_out", max(offset, _ALIGN), pinned=True)
        views = {}
        for key, (off, t) in layout.items():
            nbytes = t.numel() * t.element_size()
            view = host[off:off + nbytes].view(t.dtype).view(t.shape)
            view.copy_(t, non_blocking=self.cuda)
            views[key] = view
        if self.cuda:
            slot.finished.record(torch.cuda.current_stream(self.device))
        slot.used = True
        return Readback(views, slot.finished if self.cuda else None, slot, slot.generation)


class Readback:
    """Arrays of one batch, valid once `event` has completed (None: already valid); in a ring slot
    (`slot`) until that slot is used again, else (slot None) in memory of their own."""

    def __init__(self, arrays: Dict[str, object], event, slot: Optional[_Slot], generation: int) -> None:
        self._arrays, self._event, self._slot, self._generation = arrays, event, slot, generation

    @property
    def waits(self) -> bool:
        """True when the arrays are valid only once the device has finished (CUDA)."""
        return self._event is not None

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def arrays(self) -> Dict[str, np.ndarray]:
        """Waits for the copies, then numpy copies of the arrays (the slot can be reused afterwards)."""
        if self._slot is None:
            return self._arrays  # the tensors' own memory: nothing will overwrite it
        if self._event is not None:
            self._event.synchronize()
        if self._slot.generation != self._generation:
            raise RuntimeError("this batch's host buffers were reused before its result was read: read "
                               "each PendingBatch's result before submitting more than the ring's depth")
        return {k: v.numpy().copy() for k, v in self._arrays.items()}


class PendingBatch:
    """What `Predictor.submit` returns: `result()` gives the batch's predictions (waiting for the
    device if needed, once; later calls return the same list). `done()` asks without waiting."""

    def __init__(self, finish: Callable[[], list], readback: Readback) -> None:
        self._finish, self._readback = finish, readback
        self._result: Optional[list] = None

    @property
    def in_background(self) -> bool:
        """True when the device computes the batch after `submit` returned (CUDA); False when `submit`
        computed it in the caller's thread (the CPU): then nothing runs beside the caller."""
        return self._readback.waits

    def done(self) -> bool:
        return self._result is not None or self._readback.ready()

    def result(self) -> list:
        if self._result is None:
            self._result = self._finish()
        return self._result
