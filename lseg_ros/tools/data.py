"""Datasets on disk and the training augmentation of docs/model.md §4.1.

Folder dataset layout::

    ROOT/images/<stem>.{jpg,jpeg,png,bmp,tif,tiff,webp}
    ROOT/masks/<stem>.png        # single channel, uint8 or uint16 class ids; ignore index allowed
    ROOT/classes.{txt,yaml,yml}  # one label per line, or a YAML list / {names: [...]} / {id: name}

Augmentation (PyTorch-Encoding ``_sync_transform``): horizontal flip with p 0.5; long side drawn
from randint[base/2, 2·base] with base = crop·520/480 (260..1040 at crop 480), bilinear for the
image and nearest for the mask; pad bottom/right to ≥ crop (image 0, mask ignore index); random
crop. Validation: resize the short side to crop, centre-crop.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from lseg_ros.tools.metrics import check_ids

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASS_FILES = ("classes.txt", "classes.yaml", "classes.yml")


class DataError(ValueError):
    """Bad input data; the message names the file."""


def read_image(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; ``DataError`` naming the file if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot read image (missing, corrupt or unsupported format)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel class-id mask (uint8/uint16 PNG) as int64."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise DataError(f"{path}: cannot read mask")
    if m.ndim == 3:
        if m.shape[2] >= 3 and np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 0], m[..., 2]):
            m = m[..., 0]
        else:
            raise DataError(f"{path}: mask must have one channel of class ids, has {m.shape[2]} channels "
                            "(a colour-palette picture is not a mask)")
    return m.astype(np.int64)


def read_class_names(path: Path) -> list[str]:
    """Class names from a .txt (one per line) or a YAML file (list, {names: list}, {id: name})."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read class names ({e.strerror})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from None
        if isinstance(data, dict):
            if "names" in data:
                data = data["names"]
            elif "labels" in data:
                data = data["labels"]
        if isinstance(data, dict):
            try:
                ids = sorted(int(k) for k in data)
            except (TypeError, ValueError):
                raise DataError(f"{path}: expected integer class ids as keys") from None
            if ids != list(range(len(ids))):
                raise DataError(f"{path}: class ids must be 0..N-1 without gaps, got {ids}")
            data = [data[k] if k in data else data[str(k)] for k in ids]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise DataError(f"{path}: expected a list of class-name strings")
        names = [x.strip() for x in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise DataError(f"{path}: no class names")
    if any(not n for n in names):
        raise DataError(f"{path}: empty class name")
    return names


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, checking that their sizes match; ``DataError`` naming both."""
    image = read_image(image_path)
    mask = read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match "
                        f"image {image_path} size {image.shape[1]}x{image.shape[0]}")
    return image, mask


@dataclass
class Sample:
    image_path: Path
    mask_path: Path


class FolderDataset:
    """Images and masks matched by file stem; validated on read.

    Args:
        root: dataset folder (layout in the module docstring).
        class_names: overrides ``ROOT/classes.*``.
        ignore_index: mask value excluded from loss and metrics.
        transform: ``(image, mask, index) -> (image, mask)`` applied after validation.
        skip_bad: count and skip unreadable/mismatched samples instead of raising.
    """

    def __init__(
        self,
        root: Path,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        transform: Callable | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{d}: folder not found (expected ROOT/images and ROOT/masks)")
        if class_names is None:
            found = [self.root / n for n in CLASS_FILES if (self.root / n).is_file()]
            if not found:
                raise DataError(f"{self.root}: no class-name file ({', '.join(CLASS_FILES)}); "
                                "pass the names explicitly")
            class_names = read_class_names(found[0])
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.transform = transform
        self.skip_bad = skip_bad
        self.skipped: list[str] = []
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() == ".png"}
        self.samples: list[Sample] = []
        unmatched = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS:
                continue
            if p.stem in masks:
                self.samples.append(Sample(p, masks[p.stem]))
            else:
                unmatched.append(p)
        if unmatched:
            msg = f"{len(unmatched)} image(s) without a mask in {mask_dir}, e.g. {unmatched[0].name}"
            if not skip_bad:
                raise DataError(msg)
            log.warning("%s; skipped", msg)
            self.skipped += [str(p) for p in unmatched]
        if not self.samples:
            raise DataError(f"{self.root}: no image/mask pairs")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read and validate one pair (no transform). Raises ``DataError`` naming the file(s)."""
        s = self.samples[index]
        image, mask = read_pair(s.image_path, s.mask_path)
        try:
            check_ids(mask, self.num_classes, self.ignore_index, str(s.mask_path))
        except ValueError as e:
            raise DataError(str(e)) from None
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask, index)
        return image, mask

    def validate(self) -> list[int]:
        """Read every sample once; return the good indices (raise on the first bad one unless
        ``skip_bad``, in which case bad ones are counted in ``skipped``)."""
        good = []
        for i in range(len(self.samples)):
            try:
                self.load(i)
                good.append(i)
            except DataError as e:
                if not self.skip_bad:
                    raise
                log.warning("skipping: %s", e)
                self.skipped.append(str(e))
        if not good:
            raise DataError(f"{self.root}: every sample is bad ({len(self.skipped)} skipped)")
        self.samples = [self.samples[i] for i in good]
        return good


def _resize(image: np.ndarray, mask: np.ndarray, w: int, h: int):
    return (cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(mask.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64))


class TrainTransform:
    """The reference training augmentation (docs/model.md §4.1); ``rng`` per sample comes from (seed, epoch, index)."""

    def __init__(self, crop_size: int = 480, ignore_index: int = 255, seed: int = 0) -> None:
        self.crop = int(crop_size)
        self.base = int(round(self.crop * 520 / 480))
        self.ignore_index = ignore_index
        self.seed = seed
        self.epoch = 0

    def __call__(self, image: np.ndarray, mask: np.ndarray, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        h, w = mask.shape
        long = int(rng.integers(self.base // 2, 2 * self.base + 1))
        if h > w:
            oh, ow = long, int(w * long / h + 0.5)
        else:
            ow, oh = long, int(h * long / w + 0.5)
        image, mask = _resize(np.ascontiguousarray(image), np.ascontiguousarray(mask), max(ow, 1), max(oh, 1))
        ph, pw = max(self.crop - oh, 0), max(self.crop - ow, 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        h, w = mask.shape
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        return image[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]


class ValTransform:
    """Resize the short side to ``crop_size`` and centre-crop (the reference validation, docs/model.md §4.1)."""

    def __init__(self, crop_size: int = 480) -> None:
        self.crop = int(crop_size)

    def __call__(self, image: np.ndarray, mask: np.ndarray, index: int = 0):
        h, w = mask.shape
        if w > h:
            oh, ow = self.crop, int(w * self.crop / h + 0.5)
        else:
            ow, oh = self.crop, int(h * self.crop / w + 0.5)
        image, mask = _resize(image, mask, ow, oh)
        y, x = (oh - self.crop) // 2, (ow - self.crop) // 2
        return image[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]

