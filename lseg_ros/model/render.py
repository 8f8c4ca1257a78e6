"""Images built from a frame's results where the results are: on the GPU by tensor ops (one copy back
per frame), on the CPU by imaging's numpy/OpenCV code (vectorised, no copy). Both give the same
images: class ids equal, overlays within one level (rounding), tested in test/test_model_render.py.

- class ids: the published mask, label index per pixel with pixels whose winning probability is below
  `min_confidence` set to the unlabeled id (255 up to 254 labels, else 65535; imaging.class_mask);
- overlay: the mask's palette colours blended over the frame (RGB), unlabeled pixels keep the frame
  (imaging.overlay without legend and banner: those are drawn over their own small region afterwards,
  imaging.draw_legend / draw_banner, so no full-resolution work is left to the caller).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

import numpy as np

from .. import imaging

if TYPE_CHECKING:  # torch is imported where the GPU path runs: the node imports this module before torch
    import torch


@dataclass(frozen=True, eq=False)
class OverlayStyle:
    colors: np.ndarray  # (N, 3) uint8 RGB, one per label
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True, eq=False)
class RenderRequest:
    """The images to build for every frame of a batch (beside mask, confidence and statistics)."""

    class_ids: bool = False
    min_confidence: float = 0.0
    overlay: Optional[OverlayStyle] = None

    @property
    def empty(self) -> bool:
        return not self.class_ids and self.overlay is None


@functools.lru_cache(maxsize=8)
def _color_table(colors: bytes, n: int, alpha: float, device: str) -> "torch.Tensor":
    """(n + 1, 3) float32 colours x alpha on `device`, the last row (unlabeled) zero: made once per
    palette, label count and alpha, not per frame (a host-to-device copy waits for the device)."""
    import torch
    table = torch.zeros(n + 1, 3, dtype=torch.float32)
    table[:n] = torch.from_numpy(np.frombuffer(colors, np.uint8).reshape(n, 3).astype(np.float32)) * alpha
    return table.to(device)


def render_device(mask: "torch.Tensor", confidence: "torch.Tensor", frame: "torch.Tensor", order: str, n: int,
                  request: RenderRequest) -> Dict[str, "torch.Tensor"]:
    """Tensor version (any device; the GPU path). mask (H, W) label index, confidence (H, W) float32,
    frame (H, W, 3) uint8 in `order`. Returns {"class_ids": (H, W) uint8 or int16 (mono16 ids: uint16 has
    no native dtype, int16 has the same bytes, 65535 == -1), "overlay": (H, W, 3) uint8}."""
    import torch
    out: Dict[str, torch.Tensor] = {}
    ids = mask.long()
    unlabeled = imaging.unlabeled_id(n)
    if request.min_confidence > 0:
        ids = torch.where(confidence < request.min_confidence, torch.full_like(ids, unlabeled), ids)
    if request.class_ids:
        out["class_ids"] = ids.to(torch.uint8) if unlabeled == 255 else \
            torch.where(ids == unlabeled, -1, ids).to(torch.int16)
    if request.overlay is not None:
        style = request.overlay
        rgb = frame if order == "rgb" else frame.flip(-1)
        colors = np.ascontiguousarray(style.colors[:n], np.uint8)
        table = _color_table(colors.tobytes(), n, style.alpha, str(frame.device))
        labeled = ids < n
        color = table[torch.where(labeled, ids, n)]
        blended = (rgb.float() * (1.0 - style.alpha) + color).round_().clamp_(0, 255).to(torch.uint8)
        out["overlay"] = torch.where(labeled.unsqueeze(-1), blended, rgb)
    return out


def render_host(mask: np.ndarray, confidence: np.ndarray, frame: np.ndarray, order: str, n: int,
                request: RenderRequest) -> Dict[str, np.ndarray]:
    """numpy / OpenCV version (the CPU path), same outputs as render_device (class ids as uint8 or uint16)."""
    out: Dict[str, np.ndarray] = {}
    ids, _ = imaging.class_mask(mask, confidence, n, request.min_confidence)
    if request.class_ids:
        out["class_ids"] = ids
    if request.overlay is not None:
        rgb = frame if order == "rgb" else frame[:, :, ::-1]
        out["overlay"] = imaging.overlay(np.ascontiguousarray(rgb), ids, request.overlay.colors[:n], legend=False,
                                         alpha=request.overlay.alpha)
    return out


def as_published(name: str, array: np.ndarray) -> np.ndarray:
    """Host arrays from render_device as the published dtypes (int16 class ids -> uint16 bytes)."""
    return array.view(np.uint16) if name == "class_ids" and array.dtype == np.int16 else array
