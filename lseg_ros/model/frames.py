"""Frames in: checks, normalisation, the size a frame runs at, and the padded batch (docs/model.md §3.1:
the reference pads bottom/right with the value that is black after normalisation).

A batch is built on the device from the uploaded uint8 frames: normalised with the weights' mean/std,
shrunk so the long side is at most `max_side` (aspect kept; also to fit `input_size`), padded to one
common size (multiples of 32, or exactly `input_size`).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# (h, w, rh, rw): a frame's own size and the size it was run at
FrameSize = Tuple[int, int, int, int]


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")


def check_order(channel_order: str) -> None:
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")


def normalize(x: torch.Tensor, mean, std, channel_order: str,
              size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """(H, W, 3) uint8 tensor -> (1, 3, H, W) float32 ``(x/255 - mean) / std`` (same device), resized to
    `size` first when given (bilinear, antialiased). The resize runs on the 0..255 values and the
    normalisation after it, on the smaller image: the same result (both are linear and the resize's
    weights sum to 1), fewer passes over a large frame."""
    x = x.permute(2, 0, 1).unsqueeze(0).float()
    if channel_order == "bgr":
        x = x.flip(1)
    if size is not None and tuple(size) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def normalize_image(image: np.ndarray, mean, std, device=None, channel_order: str = "rgb") -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32 ``(x/255 - mean) / std`` on ``device``.

    ``mean``/``std``: 3 numbers, or tensors broadcastable to (1, 3, 1, 1). The one place
    where images are normalised (the Predictor and the training tools use it)."""
    check_image(image)
    check_order(channel_order)
    return normalize(torch.from_numpy(np.ascontiguousarray(image)).to(device), mean, std, channel_order)


def ceil32(v: int) -> int:
    return math.ceil(v / 32) * 32


def fit(h: int, w: int, max_side: Optional[int], input_size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """The size a (h, w) frame is run at: shrunk for max_side and to fit input_size, never grown."""
    s = 1.0
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
    if input_size is not None:
        s = min(s, input_size[0] / h, input_size[1] / w)
    if s >= 1.0:
        return h, w
    return max(1, min(round(h * s), input_size[0] if input_size else h)), \
        max(1, min(round(w * s), input_size[1] if input_size else w))


class BatchBuilder:
    """Uploaded uint8 frames -> one padded (B, 3, PH, PW) batch in the compute dtype, and each frame's
    FrameSize. Holds the weights' mean/std and the value that is black after normalisation."""

    def __init__(self, mean, std, device: torch.device, dtype: torch.dtype) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.black = -self.mean / self.std
        self.dtype = dtype

    def pad(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Pad bottom/right to (h, w) with black (as the reference's pad_image)."""
        _, c, xh, xw = x.shape
        if (xh, xw) == (h, w):
            return x
        out = self.black.to(x.dtype).expand(x.shape[0], c, h, w).clone()
        out[:, :, :xh, :xw] = x
        return out

    def __call__(self, frames: Sequence[torch.Tensor], orders: Sequence[str], max_side: Optional[int],
                 input_size: Optional[Tuple[int, int]]) -> Tuple[torch.Tensor, List[FrameSize]]:
        sizes, run = [], []
        for t, order in zip(frames, orders):
            h, w = t.shape[:2]
            rh, rw = fit(h, w, max_side, input_size)
            x = normalize(t, self.mean, self.std, order, (rh, rw))
            sizes.append((h, w, rh, rw))
            run.append(x)
        ph, pw = input_size or (ceil32(max(s[2] for s in sizes)), ceil32(max(s[3] for s in sizes)))
        batch = self.black.to(self.dtype).expand(len(run), 3, ph, pw).clone()
        for i, x in enumerate(run):
            batch[i, :, :x.shape[2], :x.shape[3]] = x
        return batch, sizes
