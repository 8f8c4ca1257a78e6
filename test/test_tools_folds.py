"""PASCAL-5i / COCO-20i fold splits and episode sampling (docs/model.md §4.2)."""
import pickle

import numpy as np
import pytest

from lseg_ros.tools import folds


def test_pascal_folds():
    assert folds.fold_classes("pascal", 0) == [0, 1, 2, 3, 4]
    assert [folds.PASCAL_CLASSES[c] for c in folds.fold_classes("pascal", 0)] == [
        "aeroplane", "bicycle", "bird", "boat", "bottle"]
    assert folds.fold_classes("pascal", 3) == [15, 16, 17, 18, 19]
    assert folds.PASCAL_CLASSES[10] == "diningtable" and folds.PASCAL_CLASSES[15] == "pottedplant"
    trn = folds.fold_classes("pascal", 1, "trn")
    assert len(trn) == 15 and not set(trn) & set(folds.fold_classes("pascal", 1))


def test_coco_folds_partition():
    assert folds.fold_classes("coco", 1)[:3] == [1, 5, 9]
    allc = sorted(c for i in range(4) for c in folds.fold_classes("coco", i))
    assert allc == list(range(80))
    assert len(folds.COCO_CLASSES) == 80 and all(" " not in n for n in folds.COCO_CLASSES)
    with pytest.raises(ValueError):
        folds.fold_classes("coco", 4)


def test_read_splits_and_episodes(tmp_path):
    d = tmp_path / "pascal" / "val"
    d.mkdir(parents=True)
    (d / "fold0.txt").write_text("2007_000033__01\n2007_000042__03\n")
    items = folds.read_split("pascal", 0, "val", tmp_path)
    assert items[1] == folds.Episode("2007_000042", 2)
    eps = folds.sample_episodes("pascal", items, n=5)
    assert [e.name for e in eps] == ["2007_000033", "2007_000042"] * 2 + ["2007_000033"]

    c = tmp_path / "coco" / "val"
    c.mkdir(parents=True)
    with open(c / "fold0.pkl", "wb") as f:
        pickle.dump({0: ["val2014/a.jpg", "val2014/b.jpg"], 4: ["val2014/c.jpg"]}, f)
    items = folds.read_split("coco", 0, "val", tmp_path)
    assert len(items) == 3
    a = folds.sample_episodes("coco", items, n=1000, seed=0)
    b = folds.sample_episodes("coco", items, n=1000, seed=0)
    assert a == b and len(a) == 1000
    frac = sum(e.class_id == 4 for e in a) / 1000
    assert 0.4 < frac < 0.6          # class drawn first, uniformly
    img, mask = folds.image_and_mask_paths("coco", tmp_path, "val2014/a.jpg")
    assert str(mask).endswith("COCO2014/annotations/val2014/a.png")


def test_split_file_missing_and_unsafe_pickle(tmp_path):
    with pytest.raises(FileNotFoundError, match="fold2.txt"):
        folds.read_split("pascal", 2, "val", tmp_path)
    c = tmp_path / "coco" / "val"
    c.mkdir(parents=True)
    with open(c / "fold0.pkl", "wb") as f:
        pickle.dump({0: [np.int64(1)]}, f)
    with pytest.raises(ValueError, match=r"fold0.pkl.*numpy"):      # refused, naming the file
        folds.read_split("coco", 0, "val", tmp_path)
    (c / "fold0.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="fold0.pkl"):
        folds.read_split("coco", 0, "val", tmp_path)


def test_binary_target_keeps_ignore():
    m = np.array([[0, 3, 255, 4]])
    assert folds.binary_target(m, 2).tolist() == [[0, 1, 255, 0]]
    # the ignore value written is the caller's (the loss's), the boundary read is PASCAL's 255
    assert folds.binary_target(m, 2, ignore_index=-1).tolist() == [[0, 1, -1, 0]]
    assert folds.binary_target(m, 3, ignore_index=254).tolist() == [[0, 0, 254, 1]]


def test_coco_has_no_boundary_value():
    """HSNet ignores 255 for PASCAL only; in COCO every value but class+1 is background."""
    assert folds.boundary_value("pascal") == 255 and folds.boundary_value("coco") is None
    m = np.array([[0, 3, 255, 4]])
    assert folds.binary_target(m, 2, 255, folds.boundary_value("coco")).tolist() == [[0, 1, 0, 0]]
