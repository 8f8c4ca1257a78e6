"""Folder datasets: validation errors that name the file, skips, augmentation (docs/model.md §4.1)."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lseg_ros.tools.data import (DataError, FolderDataset, TrainTransform, ValTransform, read_class_names)

sys.path.insert(0, str(Path(__file__).parent))
from tools_synth import CLASSES, make_shapes  # noqa: E402


def test_reads_and_validates(tmp_path):
    ds = FolderDataset(make_shapes(tmp_path / "d", 3))
    assert ds.class_names == CLASSES and len(ds) == 3
    img, mask = ds[0]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and mask.shape == (64, 64)
    assert set(np.unique(mask)) == {0, 1, 2}
    assert tuple(img[mask == 1].mean(0).round()) == (220, 30, 30)   # RGB order


def test_bad_inputs_named(tmp_path):
    root = make_shapes(tmp_path / "d", 3)
    cv2.imwrite(str(root / "masks" / "001.png"), np.zeros((32, 64), np.uint8))
    ds = FolderDataset(root)
    with pytest.raises(DataError, match=r"masks/001\.png.*does not match.*images/001\.png"):
        ds.load(1)
    m = np.zeros((64, 64), np.uint8)
    m[0, 0] = 7
    cv2.imwrite(str(root / "masks" / "002.png"), m)
    with pytest.raises(DataError, match=r"002\.png.*class id\(s\) 7"):
        ds.load(2)
    (root / "images" / "000.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"000\.png: cannot read image"):
        ds.load(0)
    ds = FolderDataset(root, skip_bad=True)
    with pytest.raises(DataError, match="every sample is bad"):
        ds.validate()
    assert len(ds.skipped) == 3


def test_skip_counts_and_missing_mask(tmp_path):
    root = make_shapes(tmp_path / "d", 3)
    (root / "images" / "000.png").write_bytes(b"garbage")
    cv2.imwrite(str(root / "images" / "extra.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="without a mask.*extra.png"):
        FolderDataset(root)
    ds = FolderDataset(root, skip_bad=True)
    assert ds.validate() == [1, 2] and len(ds) == 2 and len(ds.skipped) == 2


def test_class_files(tmp_path):
    (tmp_path / "a.yaml").write_text("names: [wall, floor]\n")
    (tmp_path / "b.yaml").write_text("0: wall\n1: floor\n")
    (tmp_path / "c.yaml").write_text("0: wall\n2: floor\n")
    (tmp_path / "d.txt").write_text("# comment\nwall\n\nfloor\n")
    assert read_class_names(tmp_path / "a.yaml") == ["wall", "floor"]
    assert read_class_names(tmp_path / "b.yaml") == ["wall", "floor"]
    assert read_class_names(tmp_path / "d.txt") == ["wall", "floor"]
    with pytest.raises(DataError, match="c.yaml"):
        read_class_names(tmp_path / "c.yaml")


def test_train_transform():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255
    mask = np.zeros((40, 80), np.int64)
    mask[:, :40] = 1
    t = TrainTransform(crop_size=64, ignore_index=255, seed=3)
    assert t.base == 69                           # 520/480 of the crop
    seen_pad, seen_flip = False, False
    for i in range(40):
        a, m = t(img, mask, i)
        assert a.shape == (64, 64, 3) and m.shape == (64, 64)
        assert set(np.unique(m)) <= {0, 1, 255}
        pad = m == 255
        assert (a[pad] == 0).all()                # image padded with 0, mask with ignore
        seen_pad |= bool(pad.any())
        valid = ~pad
        # image and mask stay aligned: white <=> class 1
        assert ((a[..., 0][valid] > 127) == (m[valid] == 1)).mean() > 0.97
        seen_flip |= bool(m[0, 0] == 0 and (m[0] == 1).any())
    assert seen_pad and seen_flip
    a1, m1 = t(img, mask, 5)
    a2, m2 = t(img, mask, 5)
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)   # a function of (seed, epoch, index)
    v, vm = ValTransform(32)(img, mask)
    assert v.shape == (32, 32, 3) and vm.shape == (32, 32)
