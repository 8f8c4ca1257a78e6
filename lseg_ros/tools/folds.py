"""The zero-shot fold protocol (docs/model.md §4.2): PASCAL-5i and COCO-20i as in HSNet.

Class ids here are 0-based indices into the class-name lists below; the masks on disk hold
``class_id + 1`` (0 is background). 255 is special for PASCAL only, as in HSNet: the SBD-aug
boundary, ignored in loss and metrics. HSNet's COCO reader keeps nothing but ``class_id + 1``
as foreground, so there a 255 pixel is background like any other value (``boundary_value``).

* PASCAL-5i: fold i holds VOC classes 5i..5i+4 (0-based), i.e. mask values 5i+1..5i+5.
* COCO-20i: fold i holds class indices {i + 4k, k = 0..19} (0-based of 80).

On-disk layout (HSNet's ``fewshot_data``; split lists from HSNet's ``data/splits``)::

    ROOT/VOC2012/JPEGImages/<name>.jpg
    ROOT/VOC2012/SegmentationClassAug/<name>.png     # SBD-aug masks, values 0..20 and 255
    SPLITS/pascal/val/fold<i>.txt                    # lines "<name>__<class 1-based>"
    SPLITS/pascal/trn/fold<i>.txt
    ROOT/COCO2014/<val2014|train2014>/<file>.jpg
    ROOT/COCO2014/annotations/<val2014|train2014>/<file>.png   # values class+1, 0 bg
    SPLITS/coco/val/fold<i>.pkl                      # {class 0-based: [image names]}
    SPLITS/coco/trn/fold<i>.pkl

Episodes (1000 at test): PASCAL walks the split list in order (HSNet uses
``idx % len(list)``); COCO draws a class uniformly, then an image of that class, with a seeded
generator (HSNet seeds 0 with ``np.random``; ours is ``numpy.random.default_rng(seed)``, so the
exact COCO draw differs from HSNet's while following the same distribution).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "trafficlight", "firehydrant", "stopsign", "parkingmeter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sportsball", "kite",
    "baseballbat", "baseballglove", "skateboard", "surfboard", "tennisracket", "bottle",
    "wineglass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hotdog", "pizza", "donut", "cake", "chair", "couch",
    "pottedplant", "bed", "diningtable", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cellphone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddybear", "hairdrier", "toothbrush",
)
Benchmark = Literal["pascal", "coco"]
NUM_FOLDS = 4
DEFAULT_EPISODES = 1000
IGNORE_INDEX = 255
BOUNDARY = 255   # PASCAL's boundary value on disk


def boundary_value(benchmark: Benchmark) -> int | None:
    """The mask value HSNet ignores for this benchmark: 255 for PASCAL, none for COCO."""
    class_names(benchmark)  # validates the name
    return BOUNDARY if benchmark == "pascal" else None


def class_names(benchmark: Benchmark) -> tuple[str, ...]:
    if benchmark == "pascal":
        return PASCAL_CLASSES
    if benchmark == "coco":
        return COCO_CLASSES
    raise ValueError(f"unknown benchmark {benchmark!r} (pascal or coco)")


def fold_classes(benchmark: Benchmark, fold: int, split: Literal["val", "trn"] = "val") -> list[int]:
    """0-based class ids of the fold's test classes (``val``) or its training classes (``trn``)."""
    if not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be 0..{NUM_FOLDS - 1}, got {fold}")
    n = len(class_names(benchmark))
    per_fold = n // NUM_FOLDS
    if benchmark == "pascal":
        val = [fold * per_fold + i for i in range(per_fold)]
    else:
        val = [fold + NUM_FOLDS * k for k in range(per_fold)]
    if split == "val":
        return val
    if split == "trn":
        return [c for c in range(n) if c not in val]
    raise ValueError(f"split must be 'val' or 'trn', got {split!r}")


@dataclass(frozen=True)
class Episode:
    """One query: image name and the (0-based) class it is asked about."""

    name: str
    class_id: int


class _SplitUnpickler(pickle.Unpickler):
    """HSNet's COCO split files are dicts of lists of strings: allow nothing else."""

    def find_class(self, module, name):  # noqa: D102
        raise pickle.UnpicklingError(f"split file may hold only builtin containers, not {module}.{name}")


def split_path(benchmark: Benchmark, fold: int, split: str, splits_dir: Path) -> Path:
    """Where HSNet keeps a fold's split list (``.txt`` for PASCAL, ``.pkl`` for COCO)."""
    ext = "txt" if benchmark == "pascal" else "pkl"
    return Path(splits_dir) / benchmark / split / f"fold{fold}.{ext}"


def read_split(benchmark: Benchmark, fold: int, split: str, splits_dir: Path) -> list[Episode]:
    """Read HSNet's split list for a fold: every (image, class) pair of the split."""
    class_names(benchmark)
    path = split_path(benchmark, fold, split, splits_dir)
    if benchmark == "pascal":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: PASCAL-5i split list not found (HSNet data/splits)")
        out = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                name, cls = line.strip().split("__")
                out.append(Episode(name, int(cls) - 1))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected '<name>__<class>', got {line!r}") from None
        return out
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO-20i split file not found (HSNet data/splits)")
    try:
        with open(path, "rb") as f:
            table = _SplitUnpickler(f).load()
        if not isinstance(table, dict):
            raise ValueError(f"holds a {type(table).__name__}, not a dict of class -> image names")
        return [Episode(str(name), int(c)) for c in sorted(table) for name in table[c]]
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a readable HSNet COCO split file ({e})") from None


def sample_episodes(
    benchmark: Benchmark, items: list[Episode], n: int = DEFAULT_EPISODES, seed: int = 0
) -> list[Episode]:
    """The test episodes: PASCAL cycles through ``items`` in order; COCO draws class, then image."""
    if not items:
        raise ValueError("no (image, class) pairs to draw episodes from")
    if benchmark == "pascal":
        return [items[i % len(items)] for i in range(n)]
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Episode]] = {}
    for e in items:
        by_class.setdefault(e.class_id, []).append(e)
    classes = sorted(by_class)
    out = []
    for _ in range(n):
        c = classes[int(rng.integers(len(classes)))]
        pool = by_class[c]
        out.append(pool[int(rng.integers(len(pool)))])
    return out


def image_and_mask_paths(benchmark: Benchmark, root: Path, name: str) -> tuple[Path, Path]:
    """File paths of one split entry in the HSNet layout (see module docstring)."""
    root = Path(root)
    if benchmark == "pascal":
        return (root / "VOC2012" / "JPEGImages" / f"{name}.jpg",
                root / "VOC2012" / "SegmentationClassAug" / f"{name}.png")
    base = root / "COCO2014"
    stem = name[:-4] if name.endswith(".jpg") else name
    return base / f"{stem}.jpg", base / "annotations" / f"{stem}.png"


def binary_target(mask: np.ndarray, class_id: int, ignore_index: int = IGNORE_INDEX,
                  boundary: int | None = BOUNDARY) -> np.ndarray:
    """Episode target (int64) from a class-id mask: 1 where ``class_id + 1``, else 0; pixels
    equal to ``boundary`` (PASCAL's 255; None for COCO, see ``boundary_value``) become
    ``ignore_index``, the value the loss and metrics ignore."""
    out = (mask == class_id + 1).astype(np.int64)
    if boundary is not None:
        out[mask == boundary] = ignore_index
    return out
