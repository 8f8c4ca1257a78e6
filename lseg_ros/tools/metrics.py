"""Segmentation metrics (docs/model.md §4.2): confusion matrix, mIoU, pixel accuracy, FB-IoU.

Two families:

* Fixed-label evaluation (ADE20K-style, PyTorch-Encoding): a confusion matrix accumulated
  over the whole dataset; IoU_c = TP / (TP + FP + FN); pixel accuracy = correct / labelled.
  Convention: mIoU is the mean over classes whose union is non-empty, i.e. classes present in
  the ground truth or the prediction somewhere in the dataset. Classes with an empty union
  have IoU NaN and are left out of the mean (PyTorch-Encoding would count them as 0; on a
  full benchmark every class appears, so both agree there).
* The few-/zero-shot protocol (HSNet ``common/logger.py``): per episode a binary
  (background, foreground) intersection and union; per class Σinter / max(Σunion, 1);
  mIoU = mean of the foreground IoU over the fold's classes × 100; FB-IoU = mean over
  {bg, fg} of Σ_c inter / Σ_c union × 100.

Pixels equal to ``ignore_index`` in the target are dropped everywhere. Target values outside
``[0, num_classes)`` that are not the ignore index raise ``ValueError`` naming the source,
never a silently wrong number.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def check_ids(array: np.ndarray, num_classes: int, ignore_index: int | None, what: str) -> None:
    """Raise ``ValueError`` if ``array`` holds ids outside [0, num_classes) other than ignore."""
    values = np.unique(array)
    bad = values[(values < 0) | (values >= num_classes)]
    if ignore_index is not None:
        bad = bad[bad != ignore_index]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise ValueError(
            f"{what}: class id(s) {shown} outside [0, {num_classes})"
            + (f" and not the ignore index {ignore_index}" if ignore_index is not None else "")
        )


class ConfusionMatrix:
    """Accumulates an (N, N) confusion matrix; rows are ground truth, columns prediction."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, source: str = "prediction") -> None:
        """Add one (pred, target) pair of equal shape. ``source`` names the file in errors."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"{source}: prediction shape {pred.shape} != mask shape {target.shape}")
        check_ids(target, self.num_classes, self.ignore_index, f"{source} (ground truth)")
        valid = np.ones(target.shape, bool) if self.ignore_index is None else target != self.ignore_index
        p = pred[valid].astype(np.int64)
        t = target[valid].astype(np.int64)
        check_ids(p, self.num_classes, None, f"{source} (prediction)")
        n = self.num_classes
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def intersection_union(self) -> tuple[np.ndarray, np.ndarray]:
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - np.diag(self.matrix)
        return tp, union.astype(np.float64)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN where the class is in neither ground truth nor prediction."""
        inter, union = self.intersection_union()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes with a non-empty union (NaN if there is none)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else math.nan

    def pixel_accuracy(self) -> float:
        """Correct / labelled pixels (ignored pixels excluded); NaN when nothing is labelled."""
        total = self.total
        return float(np.trace(self.matrix) / total) if total else math.nan

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall TP / GT pixels; NaN for classes absent from the ground truth."""
        gt = self.matrix.sum(1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt > 0, np.diag(self.matrix) / np.where(gt > 0, gt, 1), np.nan)

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict: miou, pixel_accuracy, per-class IoU (None for NaN), matrix."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        return {
            "miou": _nan_to_none(self.miou()),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy()),
            "num_pixels": self.total,
            "per_class_iou": {n: _nan_to_none(float(v)) for n, v in zip(names, iou)},
            "confusion_matrix": self.matrix.tolist(),
        }


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def binary_area(pred: np.ndarray, target: np.ndarray, ignore_index: int | None = 255, source: str = "episode"):
    """HSNet ``classify_prediction`` for one episode: (inter[2], union[2]) over {bg, fg}.

    ``pred`` and ``target`` hold 0 (background) / 1 (foreground); target pixels equal to
    ``ignore_index`` are dropped from both. ``source`` names the mask in errors.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"{source}: prediction shape {pred.shape} != mask shape {target.shape}")
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    p, t = pred[valid].astype(np.int64), target[valid].astype(np.int64)
    for arr, what in ((p, "prediction"), (t, "mask")):
        bad = np.unique(arr[(arr < 0) | (arr > 1)])
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:10])
            raise ValueError(f"{source}: {what} of a binary episode holds values other than 0/1: {shown}"
                             + (f" (ignore index {ignore_index})" if what == "mask" else ""))
    inter = np.bincount(p[p == t], minlength=2)[:2].astype(np.float64)
    area_p = np.bincount(p, minlength=2)[:2]
    area_t = np.bincount(t, minlength=2)[:2]
    return inter, (area_p + area_t - inter).astype(np.float64)


class FewShotMeter:
    """HSNet ``AverageMeter``: per-class binary areas accumulated over episodes (docs/model.md §4.2).

    Args:
        class_ids: the fold's class ids (the classes the mean is taken over).
    """

    def __init__(self, class_ids: Iterable[int]) -> None:
        self.class_ids = [int(c) for c in class_ids]
        self.inter = {c: np.zeros(2) for c in self.class_ids}
        self.union = {c: np.zeros(2) for c in self.class_ids}
        self.episodes = 0

    def update(self, pred: np.ndarray, target: np.ndarray, class_id: int, ignore_index: int | None = 255,
               source: str = "episode"):
        if class_id not in self.inter:
            raise ValueError(f"{source}: class id {class_id} is not in this fold {self.class_ids}")
        inter, union = binary_area(pred, target, ignore_index, source)
        self.inter[class_id] += inter
        self.union[class_id] += union
        self.episodes += 1

    def per_class_iou(self) -> dict[int, float]:
        """Foreground IoU per class: Σinter / max(Σunion, 1) (0 for a class never sampled)."""
        return {c: float(self.inter[c][1] / max(self.union[c][1], 1.0)) for c in self.class_ids}

    def miou(self) -> float:
        """Mean over the fold's classes of the foreground IoU, × 100."""
        return 100.0 * float(np.mean(list(self.per_class_iou().values())))

    def fb_iou(self) -> float:
        """Mean over {bg, fg} of Σ_c inter / Σ_c union, × 100."""
        inter = sum(self.inter.values())
        union = sum(self.union.values())
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * float(np.mean(inter / np.maximum(union, 1.0)))


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path, normalize: bool = True) -> None:
    """Save the confusion matrix as a PNG (rows normalised to ground-truth totals)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, thread-safe

    matrix = np.asarray(matrix, dtype=np.float64)
    if normalize:
        rows = matrix.sum(1, keepdims=True)
        matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(class_names)
    size = min(max(4.0, 0.35 * n + 2), 40.0)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if n <= 60:
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion (row-normalised)" if normalize else "confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
