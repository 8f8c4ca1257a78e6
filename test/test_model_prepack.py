"""The CPU default path: linear layers prepacked for oneDNN (GELU fused) and channels-last (prepack.py).

Exactness: the default fp32 path gives logits within 2e-3 of the plain eager fp32 path
and masks equal on >= 99.99% of pixels; packing keeps the weights (state_dict, deepcopy) and can be
undone exactly when another Predictor needs the net in another form.
"""
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from lseg_ros.model import Predictor  # noqa: E402
from lseg_ros.model.agreement import agreement_on_images  # noqa: E402
from lseg_ros.model.fastpath import image_modules  # noqa: E402
from lseg_ros.model.prepack import (FusedGELU, PackedLinear, pack_linears, packed_dtype,  # noqa: E402
                                    prepack_supported, unpack_linears)

from test_model_fastpath import LABELS, assert_exact, photos, tiny  # noqa: E402

pytestmark = pytest.mark.skipif(not prepack_supported(torch.float32),
                                reason="this torch build or CPU has no oneDNN packed linear (prepack off here)")


def plain(net) -> Predictor:
    """The plain eager fp32 path (the benchmarks' baseline)."""
    return Predictor(net, precision="fp32", channels_last=False, prepack=False)


def linears(net):
    return [m for root in image_modules(net) for m in root.modules() if isinstance(m, (nn.Linear, PackedLinear))]


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_resnet"])
def test_default_cpu_fp32_path_is_packed_channels_last_and_exact(name):
    net = tiny(name)
    eager = plain(copy.deepcopy(net))
    fast = Predictor(net, precision="fp32")
    assert fast.channels_last and fast.prepacked and not eager.channels_last and not eager.prepacked
    if name == "tiny_vit":
        assert linears(net) and all(isinstance(m, PackedLinear) for m in linears(net))
        assert packed_dtype(image_modules(net)) == torch.float32
    assert_exact(eager, fast, photos())


def test_gelu_is_fused_into_the_linear_before_it():
    net = tiny("tiny_vit")
    n_gelu = sum(isinstance(m, nn.GELU) for root in image_modules(net) for m in root.modules())
    n = pack_linears(image_modules(net))
    packed = [m for m in linears(net) if isinstance(m, PackedLinear)]
    assert n == len(packed) > 0
    fused = sum(isinstance(m, FusedGELU) for root in image_modules(net) for m in root.modules())
    assert fused == n_gelu == sum(m.act == "gelu" for m in packed)  # every MLP's and readout's GELU
    x = torch.randn(2, 7, packed[0].in_features)
    with torch.inference_mode():
        mlp = net.pretrained.model.blocks[0].mlp
        ref = unpacked_copy(mlp)
        torch.testing.assert_close(mlp(x), ref(x), atol=1e-5, rtol=1e-5)
    assert isinstance(ref.act, nn.GELU) and isinstance(ref.fc1, nn.Linear)


def unpacked_copy(module):
    m = copy.deepcopy(module)
    unpack_linears([m])
    return m


def test_packing_keeps_the_weights():
    net = tiny("tiny_vit")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pack_linears(image_modules(net))
    after = net.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    twin = copy.deepcopy(net)  # oneDNN's opaque tensors are repacked from a plain copy
    assert all(torch.equal(v, after[k]) for k, v in twin.state_dict().items())
    unpack_linears(image_modules(net))
    assert not any(isinstance(m, (PackedLinear, FusedGELU)) for root in image_modules(net) for m in root.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_packed_net_serves_another_precision_and_the_plain_path():
    """A second Predictor that needs the net otherwise unpacks it first (exactly) instead of failing
    or computing with weights packed for another dtype."""
    net = tiny("tiny_vit")
    untouched = plain(copy.deepcopy(net))
    Predictor(net, precision="fp32")
    assert packed_dtype(image_modules(net)) == torch.float32
    again = plain(net)  # the baseline on a packed net: plain layers again
    assert packed_dtype(image_modules(net)) is None
    labels = again.encode_labels(LABELS)
    for img in photos():
        assert torch.equal(again.logits(img, labels), untouched.logits(img, labels))
    Predictor(net, precision="fp32")
    low = Predictor(net, precision="bf16")  # fp32-packed -> unpacked, converted, packed for bf16 where it can be
    bf16_packs = prepack_supported(torch.bfloat16)  # oneDNN packs bf16 on avx512_bf16/AMX CPUs only
    assert packed_dtype(image_modules(net)) == (torch.bfloat16 if bf16_packs else None)
    assert low.prepacked == bf16_packs
    r = agreement_on_images(untouched, low, photos(), untouched.encode_labels(LABELS))
    assert r["argmax_agreement"] >= 0.97, r


@pytest.mark.skipif(not prepack_supported(torch.bfloat16), reason="this CPU has no oneDNN bf16 packed linear "
                    "(needs avx512_bf16 or AMX)")
def test_bf16_packed_agrees_with_bf16_plain():
    net = tiny("tiny_vit")
    a = Predictor(copy.deepcopy(net), precision="bf16", prepack=False, channels_last=False)
    b = Predictor(net, precision="bf16")
    assert b.prepacked and b.channels_last
    r = agreement_on_images(a, b, photos(), a.encode_labels(LABELS))
    assert r["argmax_agreement"] >= 0.99, r


def test_prepack_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="prepack is for the eager CPU path"):
        Predictor(tiny(), precision="fp32", prepack=True, compile=True, input_size=(96, 128))
    p = Predictor(tiny(), precision="fp32", compile=True, input_size=(96, 128))
    assert not p.prepacked  # compile packs its own weights (inductor freezing)


@pytest.mark.parametrize("n", [3, 40])
@pytest.mark.parametrize("per_sample", [False, True])
def test_label_step_on_channels_last_embeddings_equals_nchw(n, per_sample):
    """`LSegNet.score` takes channels-last embeddings (the CPU default) through its own matmul: the
    same logits as the einsum on NCHW ones, for few and many labels, shared or per-sample labels."""
    net = tiny("tiny_vit")
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, net.config.out_dim, 12, 17, generator=g)
    emb = emb / emb.norm(dim=1, keepdim=True)
    text = torch.randn(*((2,) if per_sample else ()), n, net.config.out_dim, generator=g)
    with torch.inference_mode():
        ref = net.score(emb, text)
        cl = net.score(emb.contiguous(memory_format=torch.channels_last), text)
    assert cl.shape == ref.shape == (2, n, 24, 34)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
