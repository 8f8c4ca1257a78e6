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


def test_pinned_upload_round_trip():
    from lseg_ros.model.fastpath import Uploader
    up = Uploader(torch.device("cuda"))
    frames = [np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(3)]
    for _ in range(2):  # the second call reuses the pinned buffer after waiting for the first copy
        out = up(frames + [frames[0][::2]])
        assert up._host.is_pinned()
        for t, f in zip(out, frames + [frames[0][::2]]):
            assert t.is_cuda and t.dtype == torch.uint8
            np.testing.assert_array_equal(t.cpu().numpy(), f)
