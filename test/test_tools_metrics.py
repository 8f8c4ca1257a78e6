"""Metrics against hand-computed cases (docs/model.md §4.2)."""
import math

import numpy as np
import pytest

from lseg_ros.tools.metrics import ConfusionMatrix, FewShotMeter, binary_area, plot_confusion


def test_confusion_hand_computed_with_ignore_and_empty_class():
    # 4 classes; class 3 appears nowhere -> NaN, excluded from the mean.
    gt = np.array([[0, 0, 1, 1],
                   [0, 2, 2, 255]])
    pr = np.array([[0, 1, 1, 1],
                   [0, 2, 0, 3 - 3]])  # last pixel ignored whatever it predicts
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pr, gt)
    # class 0: tp 2, fp 1 (gt 2 -> 0), fn 1 (gt 0 -> 1)  -> 2/4
    # class 1: tp 2, fp 1, fn 0 -> 2/3 ; class 2: tp 1, fp 0, fn 1 -> 1/2
    iou = cm.iou()
    assert iou[:3] == pytest.approx([0.5, 2 / 3, 0.5])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)
    assert cm.total == 7
    s = cm.summary(["a", "b", "c", "d"])
    assert s["per_class_iou"]["d"] is None


def test_class_only_in_prediction_counts_as_zero():
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(np.array([0, 2]), np.array([0, 0]))
    iou = cm.iou()
    assert iou[0] == 0.5 and iou[2] == 0.0 and math.isnan(iou[1])
    assert cm.miou() == pytest.approx(0.25)


def test_accumulates_over_images():
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 1]), np.array([1, 0]))
    cm.update(np.array([0, 0]), np.array([0, 0]))
    assert cm.matrix.tolist() == [[2, 1], [0, 1]]
    assert cm.miou() == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_unknown_class_id_names_the_file():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"img7\.png.*7"):
        cm.update(np.zeros((2, 2), int), np.array([[0, 7], [1, 255]]), source="img7.png")
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 3), int), np.zeros((2, 2), int), source="x")


def test_empty_matrix_is_nan_not_zero():
    cm = ConfusionMatrix(2)
    cm.update(np.array([1]), np.array([255]))
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


def test_binary_area_and_fewshot_meter():
    gt = np.array([[1, 1, 0, 255]])
    pr = np.array([[1, 0, 0, 1]])
    inter, union = binary_area(pr, gt)
    assert inter.tolist() == [1, 1] and union.tolist() == [2, 2]
    m = FewShotMeter([0, 1, 2])
    m.update(pr, gt, class_id=0)                              # fg 1/2
    m.update(np.array([[1, 1]]), np.array([[1, 0]]), class_id=0)  # fg +1/+2 -> 2/4
    m.update(np.array([[0, 0]]), np.array([[0, 0]]), class_id=1)  # fg union 0 -> 0 (max(.,1))
    per = m.per_class_iou()
    assert per == {0: 0.5, 1: 0.0, 2: 0.0}
    assert m.miou() == pytest.approx(100 * 0.5 / 3)
    # bg: inter 1+0+2=3, union 2+1+2=5; fg: inter 2, union 4
    assert m.fb_iou() == pytest.approx(100 * (3 / 5 + 2 / 4) / 2)
    with pytest.raises(ValueError):
        m.update(pr, gt, class_id=5)
    # errors show the offending values and name the mask
    with pytest.raises(ValueError, match=r"m.png: mask of a binary episode .*: 3, 7"):
        m.update(np.zeros((1, 3)), np.array([[3, 7, 0]]), class_id=0, source="m.png")
    with pytest.raises(ValueError, match=r"m.png: prediction .*: -1"):
        binary_area(np.array([[-1, 0]]), np.array([[0, 0]]), source="m.png")
    with pytest.raises(ValueError, match="got 0"):
        ConfusionMatrix(0)


def test_plot_confusion(tmp_path):
    p = tmp_path / "cm.png"
    plot_confusion(np.array([[3, 1], [0, 0]]), ["a", "b"], p)
    assert p.stat().st_size > 1000
