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

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

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


@dataclass
class DeviceResult:
    """One image's results, still on the device."""

    mask: torch.Tensor  # (H, W) int dtype from mask_dtype
    confidence: torch.Tensor  # (H, W) float32
    stats: torch.Tensor  # (3, N) float32: pixel_fraction, mean_confidence, max_confidence
    probs: Optional[torch.Tensor]  # (K, H, W) float32 for the wanted labels
    prob_index: Optional[List[int]]


def summarize(logits: torch.Tensor, want_probs: WantProbs = False) -> DeviceResult:
    """(N, H, W) float32 logits -> mask, confidence, per-class statistics, wanted probabilities."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, H, W), got {tuple(logits.shape)}")
    logits = logits.float()
    n, h, w = logits.shape
    index = prob_indices(want_probs, n)
    top, mask = logits.max(dim=0)
    chunk = max(1, _CHUNK_ELEMENTS.get(logits.device.type, 1 << 22) // max(1, h * w))
    sumexp = torch.zeros_like(top)
    for part in logits.split(chunk):
        sumexp += (part - top).exp_().sum(dim=0)
    lse = top + sumexp.log()
    confidence = sumexp.reciprocal()  # exp(top - lse)
    max_logprob = torch.cat([(part - lse).amax(dim=(1, 2)) for part in logits.split(chunk)])
    flat = mask.flatten()
    count = torch.bincount(flat, minlength=n).float()
    conf_sum = torch.zeros(n, device=logits.device).index_add_(0, flat, confidence.flatten())
    mean_conf = torch.where(count > 0, conf_sum / count.clamp(min=1), torch.zeros_like(count))
    stats = torch.stack([count / flat.numel(), mean_conf, max_logprob.exp()])
    probs = None
    if index is not None:
        sel = logits if index == list(range(n)) else logits[index]
        probs = (sel - lse).exp_()
    return DeviceResult(mask.to(mask_dtype(n)), confidence, stats, probs, index)


@dataclass
class HostResult:
    mask: np.ndarray
    confidence: np.ndarray
    pixel_fraction: np.ndarray
    mean_confidence: np.ndarray
    max_confidence: np.ndarray
    probs: Union[None, np.ndarray, Dict[int, np.ndarray]]


def download(results: Sequence[DeviceResult], want_all_probs: bool) -> List[HostResult]:
    """Device results -> numpy, with every copy queued first and one wait at the end (CUDA)."""
    cuda = any(r.mask.is_cuda for r in results)
    queued = []
    for r in results:
        parts = [r.mask, r.confidence, r.stats] + ([r.probs] if r.probs is not None else [])
        queued.append([t.to("cpu", non_blocking=cuda) for t in parts])
    if cuda:
        torch.cuda.current_stream().synchronize()
    out = []
    for r, parts in zip(results, queued):
        mask, conf, stats = (t.numpy() for t in parts[:3])
        probs: Union[None, np.ndarray, Dict[int, np.ndarray]] = None
        if r.probs is not None:
            p = parts[3].numpy()
            probs = p if want_all_probs else {i: p[k] for k, i in enumerate(r.prob_index)}
        out.append(HostResult(mask, conf, stats[0], stats[1], stats[2], probs))
    return out
