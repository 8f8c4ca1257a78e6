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


def _source_rows(y0: int, y1: int, size_in: int, size_out: int, align_corners: bool):
    """Rows y0..y1-1 of a bilinear resize from size_in to size_out rows: (i0, i1, frac) as torch computes
    them (float32 scale; align_corners=False clamps negative sources to 0)."""
    y = torch.arange(y0, y1, dtype=torch.float32)
    if align_corners:
        src = y * torch.tensor((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0, dtype=torch.float32)
    else:
        src = ((y + 0.5) * torch.tensor(size_in / size_out, dtype=torch.float32) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=size_in - 1)
    return i0, (i0 + 1).clamp(max=size_in - 1), src - i0.float()


def _blend(i0: torch.Tensor, i1: torch.Tensor, frac: torch.Tensor, first: int, width: int) -> torch.Tensor:
    """(rows x width) matrix with two weights per row: 1 - frac at column i0 - first, frac at i1 - first."""
    m = torch.zeros(len(i0), width)
    at = torch.arange(len(i0))
    m[at, i0 - first] += 1 - frac
    m[at, i1 - first] += frac
    return m


def summarize_upsampled(low: torch.Tensor, crop: Tuple[int, int], want_probs: WantProbs = False,
                        band_elements: int = 1 << 20, out_size: Optional[Tuple[int, int]] = None) -> DeviceResult:
    """Half-resolution logits (N, h, w) -> the results of their x2 bilinear upsampling
    (align_corners=True, as `LSegNet.score`) cropped to `crop` = (rh, rw) and, for a frame that was shrunk
    for the network, resized to `out_size` (bilinear, align_corners=False), computed in bands of output
    rows: the full-resolution logits never exist, each band's temporaries stay in the CPU's cache, and the
    cost per output pixel is the same at any frame size. Both interpolations are separable, as
    F.interpolate's: along the width by F.interpolate on whole rows, between rows by one small matrix per
    band (the two row blends composed). At 150 labels, 480x640: 0.21-0.33 s against 0.26-0.43 s for
    upsampling first and summarizing (python -m benchmarks cpu_model post)."""
    n, h, w = low.shape
    big_h, big_w = 2 * h, 2 * w
    rh, rw = crop
    oh, ow = out_size or crop
    if not (0 < rh <= big_h and 0 < rw <= big_w):
        raise ValueError(f"crop {crop} outside the upsampled size {(big_h, big_w)}")
    low = low.float()
    acc = _Accumulator(n, oh, ow, low.device, prob_indices(want_probs, n))
    rows = max(1, band_elements // max(1, n * ow))
    for y0 in range(0, oh, rows):
        y1 = min(oh, y0 + rows)
        if (oh, ow) == (rh, rw):  # rows of the x2 grid directly
            i0, i1, frac = _source_rows(y0, y1, h, big_h, align_corners=True)
            r0, r1 = int(i0[0]), int(i1[-1])
            blend = _blend(i0, i1, frac, r0, r1 + 1 - r0)
        else:  # output row -> two rows of the cropped x2 grid -> two low rows each
            u0, u1, uf = _source_rows(y0, y1, rh, oh, align_corners=False)
            a, b = int(u0[0]), int(u1[-1])
            i0, i1, frac = _source_rows(a, b + 1, h, big_h, align_corners=True)
            r0, r1 = int(i0[0]), int(i1[-1])
            blend = _blend(u0, u1, uf, a, b + 1 - a) @ _blend(i0, i1, frac, r0, r1 + 1 - r0)
        wide = F.interpolate(low[None, :, r0:r1 + 1], size=(r1 + 1 - r0, big_w), mode="bilinear",
                             align_corners=True)[:, :, :, :rw]
        if ow != rw:
            wide = F.interpolate(wide, size=(r1 + 1 - r0, ow), mode="bilinear", align_corners=False)
        # between rows: one batched matmul over the labels (gathering the rows and blending them cost 5
        # passes over the band)
        acc.add(torch.matmul(blend.to(low.device), wide[0]), slice(y0, y1))
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
