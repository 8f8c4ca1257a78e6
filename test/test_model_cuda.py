"""CUDA paths of the predictor: device placement, fp16/bf16 weights against fp32, CUDA graphs.

These run only where CUDA is present (the project's GPU check machine, a robot's GPU); on the
CPU-only CI they are skipped with that reason.
"""
import copy

import numpy as np
import pytest
import torch

from lseg_ros.model import LSegConfig, LSegNet, Predictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return LSegNet.from_config(LSegConfig.tiny_vit(), device="cuda")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_matches_fp32_on_cuda(net, precision):
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    ref = Predictor(net, device="cuda", precision="fp32")
    low = Predictor(copy.deepcopy(net), device="cuda", precision=precision)  # converts its net in place
    assert next(low.net.pretrained.parameters()).dtype == (torch.float16 if precision == "fp16" else torch.bfloat16)
    assert next(low.net.text.parameters()).dtype == torch.float32
    labels = ref.encode_labels(["floor", "wall", "person", "other"])
    a = ref.logits(image, labels)
    b = low.logits(image, labels)
    assert a.dtype == b.dtype == torch.float32 and a.device.type == "cuda"
    tol = 0.05 if precision == "fp16" else 0.3  # logits are scaled cosines in [-14.3, 14.3]
    assert (a - b).abs().max().item() < tol
    out = low.predict(image, labels)
    assert out.mask.shape == (240, 320) and out.confidence.dtype == np.float32
    assert ((a.argmax(0) == b.argmax(0)).float().mean().item()) > 0.95


def test_auto_is_fp16_on_cuda(net):
    assert Predictor(copy.deepcopy(net), device="cuda").precision == "fp16"


@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_equal_eager(net, compile):
    images = [np.random.default_rng(i).integers(0, 256, (200 + 40 * i, 300, 3), dtype=np.uint8) for i in range(3)]
    eager = Predictor(net, device="cuda", precision="fp32", input_size=(320, 320))
    fast = Predictor(copy.deepcopy(net), device="cuda", precision="fp32", input_size=(320, 320),
                     cuda_graphs=True, compile=compile)
    fast.warmup(batch_sizes=(1, 3))
    labels = eager.encode_labels(["floor", "wall", "person", "other"])
    for batch in (images, images[:1], images):  # replays, including a batch size seen before
        for a, b in zip(eager.predict_batch(batch, labels), fast.predict_batch(batch, labels)):
            assert (a.mask == b.mask).mean() > 0.999
            np.testing.assert_allclose(a.confidence, b.confidence, atol=2e-3)
    assert len(fast.image_path.runner) == 2  # one graph per batch shape


def test_ring_upload_and_readback_round_trip():
    from lseg_ros.model.transfer import HostRing
    ring = HostRing(torch.device("cuda"), depth=2)
    frames = [np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(3)]
    for _ in range(3):  # slots reused after their event
        slot = ring.acquire()
        out = ring.upload(slot, frames + [frames[0][::2]])
        assert slot.pin_in.is_pinned()
        for t, f in zip(out, frames + [frames[0][::2]]):
            assert t.is_cuda and t.dtype == torch.uint8
            np.testing.assert_array_equal(t.cpu().numpy(), f)
        back = ring.download(slot, {"a": out[0].float() * 2, "b": out[1][:, :, 0].clone()}).arrays()
        np.testing.assert_array_equal(back["a"], frames[0].astype(np.float32) * 2)
        np.testing.assert_array_equal(back["b"], frames[1][:, :, 0])


def test_pipelined_submit_equals_one_at_a_time(net):
    """Three batches submitted before any result is read (the node's pipeline is two deep) give what
    predict_batch gives for each; a fourth submit on the 3-slot ring makes the first unreadable."""
    pred = Predictor(copy.deepcopy(net), device="cuda", precision="fp32")
    rng = np.random.default_rng(3)
    batches = [[rng.integers(0, 256, (120 + 8 * i, 160, 3), dtype=np.uint8) for _ in range(1 + i % 2)]
               for i in range(3)]
    labels = pred.encode_labels(["floor", "wall", "person"])
    want = [pred.predict_batch(b, labels, want_probs=[1]) for b in batches]
    pending = [pred.submit(b, labels, want_probs=[1]) for b in batches]
    for p, w in zip(pending, want):
        for a, b in zip(p.result(), w):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
            np.testing.assert_allclose(a.probs[1], b.probs[1], atol=1e-5)
    first = pred.submit(batches[0], labels)
    for b in batches:
        pred.submit(b, labels)
    with pytest.raises(RuntimeError, match="reused"):
        first.result()


def test_device_render_equals_host_render(net):
    from lseg_ros.model.render import OverlayStyle, RenderRequest, render_host
    from lseg_ros.imaging import palette
    pred = Predictor(copy.deepcopy(net), device="cuda", precision="fp16")
    image = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    for n, order, conf in ((4, "rgb", 0.0), (6, "bgr", 0.4), (300, "rgb", 0.2)):
        labels = pred.encode_labels([f"thing {i}" for i in range(n)])
        req = RenderRequest(class_ids=True, min_confidence=conf, overlay=OverlayStyle(palette(n), 0.6))
        p = pred.predict(image, labels, channel_order=order, render=req)
        host = render_host(p.mask, p.confidence, image, order, n, req)
        assert p.class_ids.dtype == host["class_ids"].dtype
        np.testing.assert_array_equal(p.class_ids, host["class_ids"])
        assert np.abs(p.overlay.astype(int) - host["overlay"].astype(int)).max() <= 1


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_post_processing_equals_reference(compiled):
    """The GPU's one-pass post-processing (eager, and compiled by inductor for CUDA with the label
    count dynamic) against the reference formulas (summarize on upsampled logits)."""
    from lseg_ros.model.postprocess import FusedSummary
    from test_model_pipeline import check_fused_post_processing
    fused = FusedSummary(compile=compiled)
    check_fused_post_processing(fused, "cuda", [(3, (240, 320, 240, 320)), (150, (240, 320, 240, 320)),
                                                (7, (200, 290, 200, 290)), (5, (500, 700, 240, 320))], atol=1e-4)
    assert fused._compiled is not None or not compiled  # no fallback to eager
