"""The reference evaluation protocol (docs/model.md §3.2, `LSeg_MultiEvalModule`), for offline use.

Scales x {image, flipped}, 480 windows with stride 320, logits averaged; dozens of passes per
image. `run(x, text)` is one network pass on a normalised, padded batch; `pad(x, h, w)` pads
bottom/right with normalised black (both supplied by the Predictor).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

REFERENCE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Pad = Callable[[torch.Tensor, int, int], torch.Tensor]


def _window(run: Run, pad: Pad, x: torch.Tensor, text: torch.Tensor, crop: int, flip: bool) -> torch.Tensor:
    h, w = x.shape[2:]
    xp = pad(x, max(h, crop), max(w, crop))
    out = run(xp, text)
    if flip:
        out = out + run(xp.flip(3), text).flip(3)
    return out[:, :, :h, :w]


def reference_logits(run: Run, pad: Pad, x: torch.Tensor, text: torch.Tensor,
                     scales: Sequence[float] = REFERENCE_SCALES, base_size: int = 520, crop_size: int = 480,
                     flip: bool = True) -> torch.Tensor:
    """LSeg_MultiEvalModule: per scale resize (long side ceil(base*s)), single padded crop or
    sliding crops (stride 2/3 crop), flip-sum, resize to input, sum over scales.
    Returns the sum divided by the number of passes per pixel-location (scales x flips),
    which has the same argmax as the reference's raw sum and a usable softmax."""
    b, _, h, w = x.shape
    stride = int(crop_size * 2 / 3)
    n = text.shape[0]
    total = torch.zeros(b, n, h, w, device=x.device)
    for scale in scales:
        long = int(math.ceil(base_size * scale))
        if h > w:
            height, width, short = long, int(1.0 * w * long / h + 0.5), int(1.0 * w * long / h + 0.5)
        else:
            width, height, short = long, int(1.0 * h * long / w + 0.5), int(1.0 * h * long / w + 0.5)
        cur = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)
        if long <= crop_size:
            out = _window(run, pad, cur, text, crop_size, flip)
        else:
            padded = pad(cur, max(height, crop_size), max(width, crop_size)) if short < crop_size else cur
            ph, pw = padded.shape[2:]
            out = torch.zeros(b, n, ph, pw, device=x.device)
            count = torch.zeros(b, 1, ph, pw, device=x.device)
            for ih in range(int(math.ceil((ph - crop_size) / stride)) + 1):
                for iw in range(int(math.ceil((pw - crop_size) / stride)) + 1):
                    h0, w0 = ih * stride, iw * stride
                    h1, w1 = min(h0 + crop_size, ph), min(w0 + crop_size, pw)
                    out[:, :, h0:h1, w0:w1] += _window(run, pad, padded[:, :, h0:h1, w0:w1], text, crop_size, flip)
                    count[:, :, h0:h1, w0:w1] += 1
            out = (out / count)[:, :, :height, :width]
        total += F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
    return total / (len(scales) * (2 if flip else 1))
