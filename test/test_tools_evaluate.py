"""lseg-evaluate: folder mode and the zero-shot fold protocol, with a stand-in predictor whose
answers are known, plus a CLI run with a tiny random-weight model."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from lseg_ros.tools import evaluate
from lseg_ros.tools.data import FolderDataset

sys.path.insert(0, str(Path(__file__).parent))
from tools_synth import make_shapes  # noqa: E402


class Oracle:
    """Predicts the ground truth except that class 2 is always called class 0."""

    def __init__(self, ds):
        self.ds, self.seen = ds, []

    def encode_labels(self, texts):
        self.texts = list(texts)
        return SimpleNamespace(names=tuple(texts))

    def predict(self, image, labels, channel_order="rgb", protocol="single"):
        for s in self.ds.samples:
            if np.array_equal(cv2.imread(str(s.image_path))[..., ::-1], image):
                m = cv2.imread(str(s.mask_path), cv2.IMREAD_UNCHANGED).astype(np.int64)
                break
        m[m == 2] = 0
        m[m == 255] = 1
        return SimpleNamespace(mask=m)


def test_folder_metrics_exact(tmp_path):
    ds = FolderDataset(make_shapes(tmp_path / "d", 3))
    cm, skipped = evaluate.evaluate_folder(Oracle(ds), ds)
    gt = np.concatenate([ds.load(i)[1].ravel() for i in range(3)])
    n0, n1, n2 = (np.sum(gt == k) for k in range(3))
    iou = cm.iou()
    assert iou[0] == pytest.approx(n0 / (n0 + n2)) and iou[1] == 1.0 and iou[2] == 0.0
    assert cm.pixel_accuracy() == pytest.approx((n0 + n1) / gt.size)
    table, res = evaluate.folder_report(cm, ds.class_names)
    assert "green circle" in table and res["miou"] == pytest.approx(np.mean(iou))


def test_folder_bad_sample_named_or_counted(tmp_path):
    root = make_shapes(tmp_path / "d", 3)
    cv2.imwrite(str(root / "masks" / "001.png"), np.zeros((10, 10), np.uint8))
    ds = FolderDataset(root)
    with pytest.raises(evaluate.ToolError, match=r"001\.png.*does not match"):
        evaluate.evaluate_folder(Oracle(ds), ds)
    cm, skipped = evaluate.evaluate_folder(Oracle(ds), ds, skip_bad=True)
    assert len(skipped) == 1 and cm.total == 2 * 64 * 64


def make_pascal(root, splits, entries):
    """A miniature PASCAL-5i in HSNet's layout: entries = [(name, class 1-based, mask array)]."""
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    (splits / "pascal" / "val").mkdir(parents=True)
    lines = []
    for name, cls, mask in entries:
        img = np.zeros(mask.shape + (3,), np.uint8)
        img[mask == cls] = 255                                 # the object is white
        cv2.imwrite(str(root / "VOC2012" / "JPEGImages" / f"{name}.jpg"), img)
        cv2.imwrite(str(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png"), mask.astype(np.uint8))
        lines.append(f"{name}__{cls:02d}")
    (splits / "pascal" / "val" / "fold0.txt").write_text("\n".join(lines) + "\n")


class Bright:
    """Zero-shot stand-in: foreground where the (resized) image is bright."""

    def __init__(self):
        self.encoded, self.asked = [], []

    def encode_labels(self, texts):
        self.encoded.append(list(texts))
        return SimpleNamespace(names=tuple(texts))

    def logits(self, image, labels, channel_order="rgb"):
        self.asked.append(labels.names)
        fg = torch.from_numpy(image[..., 0] > 127).float()
        n = len(labels.names)
        out = torch.zeros(n, *fg.shape)
        out[1:] = fg                      # every class row says "bright = foreground"
        out[0] = 0.5
        return out


def test_fold_protocol(tmp_path):
    m1 = np.zeros((40, 60), np.uint8)
    m1[10:30, 10:30] = 1                  # aeroplane
    m1[0, :] = 255                        # boundary, ignored
    m2 = np.zeros((40, 60), np.uint8)
    m2[:, 40:] = 3                        # bird
    m2[:, :5] = 15                        # a person (not this episode's class): background
    make_pascal(tmp_path / "data", tmp_path / "splits", [("a", 1, m1), ("b", 3, m2)])
    pred = Bright()
    meter, skipped = evaluate.evaluate_fold(pred, "pascal", 0, tmp_path / "data", tmp_path / "splits",
                                            episodes=4, original_size=True)
    # each class's pair ['others', c] encoded once; every episode runs with exactly its pair
    assert pred.encoded == [["others", c] for c in ["aeroplane", "bicycle", "bird", "boat", "bottle"]]
    assert pred.asked == [("others", "aeroplane"), ("others", "bird")] * 2
    assert meter.episodes == 4 and not skipped
    per = meter.per_class_iou()
    assert per[0] > 0.9 and per[2] > 0.9 and per[1] == 0.0      # bicycle never asked -> 0
    assert meter.miou() == pytest.approx(100 * (per[0] + per[2]) / 5)
    text, res = evaluate.fold_report(meter, evaluate.folds.PASCAL_CLASSES)
    assert "FB-IoU" in text and res["episodes"] == 4
    meter480, _ = evaluate.evaluate_fold(pred, "pascal", 0, tmp_path / "data", tmp_path / "splits", episodes=2)
    assert meter480.episodes == 2 and meter480.miou() > 30        # scored at 480x480


@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
def test_fold_boundary_value_per_benchmark(tmp_path, benchmark):
    """HSNet ignores 255 for PASCAL only: in COCO a 255 pixel is background, so predicting
    foreground there is a false positive."""
    import pickle

    mask = np.zeros((48, 48), np.uint8)
    mask[8:24, 8:24] = 1                  # class 0 (aeroplane / person): 256 pixels
    mask[32:40, :] = 255                  # 384 pixels
    img = np.zeros((48, 48, 3), np.uint8)
    img[(mask == 1) | (mask == 255)] = 255     # "bright = foreground" says fg on both
    root, splits = tmp_path / "data", tmp_path / "splits"
    if benchmark == "pascal":
        img_path, mask_path = evaluate.folds.image_and_mask_paths("pascal", root, "x")
        (splits / "pascal" / "val").mkdir(parents=True)
        (splits / "pascal" / "val" / "fold0.txt").write_text("x__01\n")
    else:
        img_path, mask_path = evaluate.folds.image_and_mask_paths("coco", root, "val2014/x.jpg")
        (splits / "coco" / "val").mkdir(parents=True)
        with open(splits / "coco" / "val" / "fold0.pkl", "wb") as f:
            pickle.dump({0: ["val2014/x.jpg"]}, f)
    for p in (img_path, mask_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(img_path), img)
    cv2.imwrite(str(mask_path), mask)
    meter, _ = evaluate.evaluate_fold(Bright(), benchmark, 0, root, splits, episodes=1, original_size=True)
    expected = 1.0 if benchmark == "pascal" else 256 / (256 + 384)
    assert meter.per_class_iou()[0] == pytest.approx(expected, abs=0.02)


def test_cli_with_tiny_model(tmp_path, capsys):
    pytest.importorskip("lseg_ros.model")
    root = make_shapes(tmp_path / "d", 2)
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(root), "--config", "tiny_vit", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "red square" in text
    res = json.loads((out / "results.json").read_text())
    assert 0 <= res["pixel_accuracy"] <= 1 and len(res["per_class_iou"]) == 3
    assert (out / "confusion.png").stat().st_size > 1000
    assert evaluate.main(["--data", str(tmp_path / "nope"), "--config", "tiny_vit"]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "texts.txt").write_text("only one\n")
    assert evaluate.main(["--data", str(root), "--config", "tiny_vit", "--label-texts",
                          str(tmp_path / "texts.txt")]) == 2
    err = capsys.readouterr().err
    assert "texts.txt" in err and "1 label texts for the 3 classes" in err
