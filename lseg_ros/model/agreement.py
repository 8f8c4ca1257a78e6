"""How faithful a fast path is: argmax agreement and logit differences against the fp32 eager path.

Used by the tests (tiny models), the benchmarks and benchmarks/gpu_fastpath.py (ViT-L/16 reference
fixtures and 480x640 photos). Both sides are Predictors, so whatever a Predictor does (weights in
fp16/bf16, compile, CUDA graphs, channels-last) is what gets compared.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from .predictor import Predictor
from .text import LabelSet


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> Dict[str, float]:
    """(..., N, H, W) logits of the same input: share of pixels with the same argmax over labels
    (dim -3), max and mean |difference|."""
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    ref, oth = reference.float(), other.to(reference.device).float()
    diff = (ref - oth).abs()
    return {"argmax_agreement": (ref.argmax(-3) == oth.argmax(-3)).float().mean().item(),
            "max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item()}


def agreement_on_images(reference: Predictor, other: Predictor, images: Sequence[np.ndarray],
                        labels: LabelSet) -> Dict[str, float]:
    """Frames (HxWx3 uint8 RGB) through both predictors' `logits`; pixel-weighted over all frames."""
    total, agree, worst, mean_sum = 0, 0.0, 0.0, 0.0
    for image in images:
        r = compare_logits(reference.logits(image, labels), other.logits(image, labels))
        n = image.shape[0] * image.shape[1]
        total += n
        agree += r["argmax_agreement"] * n
        mean_sum += r["mean_abs_diff"] * n
        worst = max(worst, r["max_abs_diff"])
    return {"argmax_agreement": agree / total, "max_abs_diff": worst, "mean_abs_diff": mean_sum / total,
            "pixels": total}


def agreement_on_tensor(reference: Predictor, other: Predictor, x: torch.Tensor,
                        text: torch.Tensor) -> Dict[str, float]:
    """Normalised input batches (B, 3, H, W), H, W multiples of 32 (e.g. the reference fixtures)."""
    ref = reference.forward(x.to(reference.device), text.to(reference.device))
    return compare_logits(ref, other.forward(x.to(other.device), text.to(other.device)))
