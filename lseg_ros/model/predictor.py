"""Predictor: images as robots see them (HxWx3 uint8) -> class mask, confidence, scores.

Single pass (default, for live use): normalise with the weights' mean/std, optionally
shrink so the long side is at most `max_side` (aspect kept), pad bottom/right to multiples
of 32 with the value that is black after normalisation (as the reference pads, §4), run,
crop, resize the logits back to the input resolution.

`protocol="reference"` runs the reference evaluation (§4, `LSeg_MultiEvalModule`):
scales x {image, flipped}, 480 windows with stride 320, logits summed over scales; for
offline use (dozens of passes per image).
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .lseg import LSegNet, resolve_device
from .text import LabelSet, encode_label_set

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
REFERENCE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result at the input resolution. Per-class arrays are indexed like `labels.names`.

    mean_confidence[c]: mean winning probability over the pixels labelled c (0 if none);
    max_confidence[c]: highest probability of c at any pixel.
    """

    mask: np.ndarray  # (H, W) int32 label index
    confidence: np.ndarray  # (H, W) float32 softmax probability of the winning label
    probs: Optional[np.ndarray]  # (N, H, W) float32, only with want_probs
    pixel_fraction: np.ndarray  # (N,) float32
    mean_confidence: np.ndarray  # (N,) float32
    max_confidence: np.ndarray  # (N,) float32
    labels: LabelSet


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")


def normalize_image(image: np.ndarray, mean, std, device=None, channel_order: str = "rgb") -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32 ``(x/255 - mean) / std`` on ``device``.

    ``mean``/``std``: 3 numbers, or tensors broadcastable to (1, 3, 1, 1). The one place
    where images are normalised (the Predictor and the training tools use it)."""
    check_image(image)
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if channel_order == "bgr":
        x = x.flip(1)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class Predictor:
    """Wraps an `LSegNet` with device, precision, label cache and image pre/post-processing."""

    def __init__(self, net: LSegNet, device: Union[str, torch.device] = "cpu", precision: Precision = "fp32",
                 max_side: Optional[int] = None, cache_size: int = 16) -> None:
        self.device = resolve_device(device)
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision!r} needs a CUDA device; on {self.device} use 'fp32'")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.precision = precision
        self.max_side = max_side
        self.net = net.to(self.device).eval()
        self._cache: "OrderedDict[tuple, LabelSet]" = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        mean = torch.tensor(net.config.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(net.config.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._mean, self._std = mean, std

    # ---- precision in one place ---------------------------------------------------
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST[self.precision])

    def _run(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self.net(x, text).float()

    # ---- labels ------------------------------------------------------------------
    def encode_labels(self, labels: Sequence[str], templates: Optional[Sequence[str]] = None) -> LabelSet:
        """Validated, encoded, cached label set (LRU keyed by the label strings and templates)."""
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of strings, not one string ({labels!r})")
        key = (tuple(labels), None if templates is None else tuple(templates))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        # no_grad, not inference_mode: the embeddings may later meet autograd (training tools).
        with torch.no_grad():
            label_set = encode_label_set(self.net.text, list(labels), templates)
        with self._lock:
            self._cache[key] = label_set
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        log.debug("encoded %d labels (version %d)", len(label_set), label_set.version)
        return label_set

    # ---- images ------------------------------------------------------------------
    def to_tensor(self, image: np.ndarray, channel_order: str = "rgb") -> torch.Tensor:
        """HxWx3 uint8 -> (1, 3, H, W) float32 normalised, on the device."""
        return normalize_image(image, self._mean, self._std, self.device, channel_order)

    def _pad(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Pad bottom/right to (h, w) with -mean/std, i.e. black (§4, pad_image)."""
        _, c, xh, xw = x.shape
        if (xh, xw) == (h, w):
            return x
        out = (-self._mean / self._std).expand(x.shape[0], c, h, w).clone()
        out[:, :, :xh, :xw] = x
        return out

    def logits(self, image: np.ndarray, labels: LabelSet, channel_order: str = "rgb",
               protocol: Literal["single", "reference"] = "single", **reference_kw) -> torch.Tensor:
        """(N, H, W) float32 logits at input resolution (reference: mean over scales and flips)."""
        x = self.to_tensor(image, channel_order)
        text = labels.embeddings.to(self.device)
        if protocol == "reference":
            return self._reference(x, text, **reference_kw)[0]
        if protocol != "single":
            raise ValueError(f"protocol must be 'single' or 'reference', got {protocol!r}")
        h, w = x.shape[2:]
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        rh, rw = x.shape[2:]
        ph, pw = math.ceil(rh / 32) * 32, math.ceil(rw / 32) * 32
        out = self._run(self._pad(x, ph, pw), text)[:, :, :rh, :rw]
        if (rh, rw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[0]

    def predict(self, image: np.ndarray, labels: Union[LabelSet, Sequence[str]], channel_order: str = "rgb",
                want_probs: bool = False, protocol: Literal["single", "reference"] = "single",
                **reference_kw) -> Prediction:
        """Segment one image. `labels` is a LabelSet (or a list of strings, encoded via the cache)."""
        if not isinstance(labels, LabelSet):
            labels = self.encode_labels(labels)
        logits = self.logits(image, labels, channel_order, protocol, **reference_kw)
        probs = logits.softmax(dim=0)
        conf, mask = probs.max(dim=0)
        n = probs.shape[0]
        count = torch.bincount(mask.flatten(), minlength=n).float()
        conf_sum = torch.zeros(n, device=probs.device).index_add_(0, mask.flatten(), conf.flatten())
        mean_conf = torch.where(count > 0, conf_sum / count.clamp(min=1), torch.zeros_like(count))
        max_conf = probs.flatten(1).max(dim=1)[0]
        as_np = lambda t: t.detach().to("cpu", torch.float32).numpy()  # noqa: E731
        return Prediction(
            mask=mask.to("cpu", torch.int32).numpy(),
            confidence=as_np(conf),
            probs=as_np(probs) if want_probs else None,
            pixel_fraction=as_np(count / mask.numel()),
            mean_confidence=as_np(mean_conf),
            max_confidence=as_np(max_conf),
            labels=labels,
        )

    # ---- reference evaluation protocol (§4) -----------------------------------------
    def _window(self, x: torch.Tensor, text: torch.Tensor, crop: int, flip: bool) -> torch.Tensor:
        h, w = x.shape[2:]
        xp = self._pad(x, max(h, crop), max(w, crop))
        out = self._run(xp, text)
        if flip:
            out = out + self._run(xp.flip(3), text).flip(3)
        return out[:, :, :h, :w]

    def _reference(self, x: torch.Tensor, text: torch.Tensor, scales: Sequence[float] = REFERENCE_SCALES,
                   base_size: int = 520, crop_size: int = 480, flip: bool = True) -> torch.Tensor:
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
                out = self._window(cur, text, crop_size, flip)
            else:
                pad = self._pad(cur, max(height, crop_size), max(width, crop_size)) if short < crop_size else cur
                ph, pw = pad.shape[2:]
                out = torch.zeros(b, n, ph, pw, device=x.device)
                count = torch.zeros(b, 1, ph, pw, device=x.device)
                for ih in range(int(math.ceil((ph - crop_size) / stride)) + 1):
                    for iw in range(int(math.ceil((pw - crop_size) / stride)) + 1):
                        h0, w0 = ih * stride, iw * stride
                        h1, w1 = min(h0 + crop_size, ph), min(w0 + crop_size, pw)
                        out[:, :, h0:h1, w0:w1] += self._window(pad[:, :, h0:h1, w0:w1], text, crop_size, flip)
                        count[:, :, h0:h1, w0:w1] += 1
                out = (out / count)[:, :, :height, :width]
            total += F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return total / (len(scales) * (2 if flip else 1))
