"""Per-image results from logits, on the device, without an N x H x W softmax.

With l = logits (N, H, W), m = max over labels and lse = logsumexp over labels at each pixel:
    mask = argmax l,  confidence = exp(m - lse)  (the winning label's softmax probability),
    max_confidence[c] = exp(max over pixels of (l_c - lse))  (exp is monotonic),
    mean_confidence[c] = mean confidence over the pixels labelled c, pixel_fraction[c] = share of them.
The sums over labels run in chunks of labels, so the only N x H x W tensor is the logits themselves;
probabilities are formed only for the labels asked for (heatmaps). All math in float32.

What goes back to the host: mask as uint8 when N <= 256, int16 up to 32768 labels, int32 beyond;
confidence and probabilities float32; the three (N,) statistics float32, in one transfer.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# float32 elements of the temporaries per label chunk: 16 MB on the CPU (reused by malloc, no page
# faults); on CUDA one chunk of up to 1 GB, since every chunk costs kernel launches there.
_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 28}

WantProbs = Union[bool, Sequence[int]]


def mask_dtype(num_labels: int) -> torch.dtype:
    """Smallest integer type holding label ids 0..num_labels-1 (uint8 covers the mono8 case)."""
    if num_labels <= 256:
        return torch.uint8
    return torch.int16 if num_labels <= 32768 else torch.int32


def prob_indices(want_probs: WantProbs, n: int) -> Optional[List[int]]:
    """Label indices whose probability maps are wanted (None: none); checked against n labels."""
    if want_probs is True:
        return list(range(n))
    if want_probs is False or want_probs is None:
        return None
    if isinstance(want_probs, (str, bytes)) or not isinstance(want_probs, Sequence):
        raise TypeError(f"want_probs must be a bool or a sequence of label indices, got {want_probs!r}")
    idx = [int(i) for i in want_probs]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"want_probs has label indices {bad} outside 0..{n - 1}")
    return idx


def first_argmax(x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """x.max(dim=0)'s indices (the first maximum) given top = x.amax(dim=0), from vectorised passes
    over bytes: on the CPU torch's indexed reduction over dim 0 is not vectorised (about 2 ns per
    element here against 0.14 for amax), the largest step of the post-processing at 150 labels."""
    n = x.shape[0]
    dt = torch.uint8 if n <= 255 else (torch.int16 if n <= 32767 else torch.int32)
    rank = torch.arange(n, 0, -1, dtype=dt, device=x.device).view(n, *([1] * (x.ndim - 1)))  # n .. 1
    hit = x == top
    hit = hit.view(torch.uint8) if dt == torch.uint8 else hit.to(dt)
    key = hit.mul_(rank).amax(dim=0)  # the rank of the first maximum; 0: none (NaN)
    return (n - key.long()).clamp_(max=n - 1)


@dataclass
class DeviceResult:
    """One image's results, still on the device."""

    mask: torch.Tensor  # (H, W) int dtype from mask_dtype
    confidence: torch.Tensor  # (H, W) float32
    stats: torch.Tensor  # (3, N) float32: pixel_fraction, mean_confidence, max_confidence
    probs: Optional[torch.Tensor]  # (K, H, W) float32 for the wanted labels
    prob_index: Optional[List[int]]


class _Accumulator:
    """Results of one image filled band by band (rows), or in one go for a whole logits tensor."""

    def __init__(self, n: int, h: int, w: int, device: torch.device, index: Optional[List[int]]) -> None:
        self.n, self.index = n, index
        self.mask = torch.empty(h, w, dtype=torch.long, device=device)
        self.confidence = torch.empty(h, w, device=device)
        self.max_logprob = torch.full((n,), -math.inf, device=device)
        self.probs = None if index is None else torch.empty(len(index), h, w, device=device)
        self._all = index is not None and index == list(range(n))

    def add(self, logits: torch.Tensor, rows: slice = slice(None)) -> None:
        """(N, r, W) float32 logits of output rows `rows`; label chunks bound the temporaries."""
        n, h, w = logits.shape
        if logits.device.type == "cpu":
            top = logits.amax(dim=0)
            mask = first_argmax(logits, top)
        else:
            top, mask = logits.max(dim=0)
        chunk = max(1, _CHUNK_ELEMENTS.get(logits.device.type, 1 << 22) // max(1, h * w))
        sumexp = torch.zeros_like(top)
        for part in logits.split(chunk):
            sumexp += (part - top).exp_().sum(dim=0)
        lse = top + sumexp.log()
        self.mask[rows] = mask
        self.confidence[rows] = sumexp.reciprocal()  # exp(top - lse)
        band_max = torch.cat([(part - lse).amax(dim=(1, 2)) for part in logits.split(chunk)])
        torch.maximum(self.max_logprob, band_max, out=self.max_logprob)
        if self.probs is not None:
            sel = logits if self._all else logits[self.index]
            self.probs[:, rows] = (sel - lse).exp_()

    def result(self) -> DeviceResult:
        stats = _stats(self.mask, self.confidence, self.max_logprob, scatter=self.mask.device.type != "cpu")
        return DeviceResult(self.mask.to(mask_dtype(self.n)), self.confidence, stats, self.probs, self.index)


def _stats(mask: torch.Tensor, confidence: torch.Tensor, max_logprob: torch.Tensor, scatter: bool) -> torch.Tensor:
    """(3, N): pixel_fraction, mean_confidence, max_confidence. scatter: the counts are scattered, not
    bincount'ed (the GPU path: CUDA's bincount reads the largest id back to size its output, a sync,
    and its output shape depends on data, which torch.compile cannot trace); the CPU's bincount is faster."""
    n, flat = max_logprob.shape[0], mask.flatten()
    if not scatter:
        count = torch.bincount(flat, minlength=n).float()
    else:
        count = torch.zeros(n, device=flat.device).index_add_(0, flat, torch.ones_like(confidence).flatten())
    conf_sum = torch.zeros(n, device=flat.device).index_add_(0, flat, confidence.flatten())
    mean_conf = torch.where(count > 0, conf_sum / count.clamp(min=1), torch.zeros_like(count))
    return torch.stack([count / flat.numel(), mean_conf, max_logprob.exp()])


def summarize(logits: torch.Tensor, want_probs: WantProbs = False) -> DeviceResult:
    """(N, H, W) float32 logits -> mask, confidence, per-class statistics, wanted probabilities."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, H, W), got {tuple(logits.shape)}")
    n, h, w = logits.shape
    acc = _Accumulator(n, h, w, logits.device, prob_indices(want_probs, n))
    acc.add(logits.float())
    return acc.result()


def summarize_upsampled(low: torch.Tensor, crop: Tuple[int, int], want_probs: WantProbs = False,
                        band_elements: int = 1 << 20) -> DeviceResult:
    """Half-resolution logits (N, h, w) -> the results of their x2 bilinear upsampling
    (align_corners=True, as `LSegNet.score`) cropped to `crop` = (rh, rw), computed in bands of
    output rows: the full-resolution logits never exist, each band's temporaries stay in the
    CPU's cache. The interpolation is separable, as F.interpolate's: along the width by
    F.interpolate, then between two rows (a small matmul). At 150 labels, 480x640: 0.21-0.33 s against
    0.26-0.43 s for upsampling first and summarizing (python -m benchmarks cpu_model post)."""
    n, h, w = low.shape
    big_h, big_w = 2 * h, 2 * w
    rh, rw = crop
    if not (0 < rh <= big_h and 0 < rw <= big_w):
        raise ValueError(f"crop {crop} outside the upsampled size {(big_h, big_w)}")
    low = low.float()
    acc = _Accumulator(n, rh, rw, low.device, prob_indices(want_probs, n))
    scale = torch.tensor((h - 1) / (big_h - 1), dtype=torch.float32)  # as torch computes it
    rows = max(1, band_elements // max(1, n * rw))
    for y0 in range(0, rh, rows):
        y1 = min(rh, y0 + rows)
        src = torch.arange(y0, y1, dtype=torch.float32) * scale
        i0 = src.floor().long().clamp(max=h - 1)
        i1 = (i0 + 1).clamp(max=h - 1)
        frac = src - i0.float()
        r0, r1 = int(i0[0]), int(i1[-1])
        wide = F.interpolate(low[None, :, r0:r1 + 1], size=(r1 + 1 - r0, big_w), mode="bilinear",
                             align_corners=True)[0, :, :, :rw]
        # between two rows: a (rows x k) matrix with two weights per row, one batched matmul over the
        # labels (gathering the rows and blending them cost 5 passes over the band)
        blend = torch.zeros(y1 - y0, r1 + 1 - r0)
        at = torch.arange(y1 - y0)
        blend[at, i0 - r0] += 1 - frac
        blend[at, i1 - r0] += frac
        acc.add(torch.matmul(blend.to(low.device), wide), slice(y0, y1))
    return acc.result()


def summarize_low_fused(low: torch.Tensor, rh: int, rw: int, h: int, w: int,
                        index: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Half-resolution logits (N, lh, lw) -> (mask, confidence, stats, probs) of their x2 bilinear
    upsampling (align_corners=True, as `LSegNet.score`) cropped to (rh, rw) and resized to (h, w) when
    the frame was shrunk, with the probability maps of the labels in `index`. One expression without label chunks or Python branches on values: what the
    GPU path runs, eagerly or compiled with the label count dynamic (then the upsampled logits are
    computed inside the fused reductions instead of being written out and read back several times)."""
    x = F.interpolate(low[None], scale_factor=2.0, mode="bilinear", align_corners=True)[0, :, :rh, :rw]
    if (rh, rw) != (h, w):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    top, mask = x.max(dim=0)
    sumexp = (x - top).exp().sum(dim=0)
    lse = top + sumexp.log()
    confidence = sumexp.reciprocal()  # exp(top - lse)
    stats = _stats(mask, confidence, (x - lse).amax(dim=(1, 2)), scatter=True)
    probs = (x.index_select(0, index) - lse).exp()
    return mask, confidence, stats, probs


class FusedSummary:
    """`summarize_low_fused` eager, or compiled on first use (`compile=True`); a compile or run failure
    of the compiled version is logged once and the eager one used from then on. The probabilities are
    always asked for, of at least two labels (unwanted ones dropped), so that one compiled graph serves
    every label count >= 2 and every number of heatmaps (torch.compile specialises sizes 0 and 1)."""

    def __init__(self, compile: bool) -> None:
        self._compiled = torch.compile(summarize_low_fused, dynamic=None) if compile else None
        self._indices: Dict[Tuple, torch.Tensor] = {}  # label indices on the device, made once (a copy syncs)

    def _index(self, wanted: List[int], device: torch.device) -> torch.Tensor:
        key = (str(device), *wanted)
        index = self._indices.get(key)
        if index is None:
            if len(self._indices) > 64:
                self._indices.clear()
            index = self._indices[key] = torch.tensor(wanted + [0] * max(0, 2 - len(wanted)), device=device)
        return index

    def __call__(self, low: torch.Tensor, size: Tuple[int, int, int, int], prob_index: Optional[List[int]]) -> DeviceResult:
        h, w, rh, rw = size
        wanted = list(prob_index or [])
        index = self._index(wanted, low.device)
        args = (low.float(), rh, rw, h, w, index)
        out = None
        if self._compiled is not None:
            torch._dynamo.maybe_mark_dynamic(args[0], 0)
            torch._dynamo.maybe_mark_dynamic(index, 0)
            try:
                out = self._compiled(*args)
            except Exception as e:  # noqa: BLE001 - an inductor failure must not stop inference
                log.warning("compiled post-processing failed (%s: %s): using the eager version",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self._compiled = None
        if out is None:
            out = summarize_low_fused(*args)
        mask, confidence, stats, probs = out
        return DeviceResult(mask.to(mask_dtype(low.shape[0])), confidence, stats,
                            probs[:len(wanted)] if wanted else None, prob_index)
