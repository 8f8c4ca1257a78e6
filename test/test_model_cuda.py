"""CUDA paths of the predictor: device placement and fp16/bf16 autocast against fp32.

These run only where CUDA is present (the project's GPU check machine, a robot's GPU); on the
CPU-only CI they are skipped with that reason.
"""
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
def test_autocast_matches_fp32_on_cuda(net, precision):
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    ref = Predictor(net, device="cuda", precision="fp32")
    low = Predictor(net, device="cuda", precision=precision)
    labels = ref.encode_labels(["floor", "wall", "person", "other"])
    a = ref.logits(image, labels)
    b = low.logits(image, labels)
    assert a.dtype == b.dtype == torch.float32 and a.device.type == "cuda"
    tol = 0.05 if precision == "fp16" else 0.3  # logits are scaled cosines in [-14.3, 14.3]
    assert (a - b).abs().max().item() < tol
    out = low.predict(image, labels)
    assert out.mask.shape == (240, 320) and out.confidence.dtype == np.float32
    assert ((a.argmax(0) == b.argmax(0)).float().mean().item()) > 0.95
