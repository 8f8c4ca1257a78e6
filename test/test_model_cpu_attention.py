"""The bf16 attention kernel for avx512_bf16 CPUs (cpu_attention.py): the same results as PyTorch's
attention within bf16's error, for every shape the ViTs use and some they do not, and in a model
only where it applies (bf16, head dims of 64, no compile), with the modules' hooks still firing."""
import copy
import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402
from lseg_ros.model import cpu_attention  # noqa: E402
from lseg_ros.model.agreement import agreement_on_images  # noqa: E402

from test_model_fastpath import LABELS, photos  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not cpu_attention.cpu_has_avx512_bf16(), reason="needs a CPU with avx512_bf16 (none here)"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def kernel():
    k = cpu_attention.kernel()  # compiles on first use (about 35 s, then cached)
    if k is None:
        pytest.skip("the kernel could not be built here (no g++/ninja?): see the log warning")
    return k


def qkv_like_timm(b, h, t, d, seed=0):
    """q, k, v as timm's Attention makes them: strided views of one (B, T, 3*H*D) projection."""
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(b, t, 3 * h * d, generator=g) * 2).bfloat16()
    return qkv.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("shape", [(1, 16, 1201, 64), (2, 3, 5, 64), (1, 2, 64, 128), (1, 1, 1, 64), (2, 2, 65, 64),
                                   (1, 2, 130, 256)])
def test_kernel_matches_pytorch_attention(kernel, shape):
    q, k, v = qkv_like_timm(*shape)
    scale = shape[-1] ** -0.5
    with torch.inference_mode():
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        ours = cpu_attention.attention(q, k, v, scale)
        theirs = F.scaled_dot_product_attention(q, k, v)
    assert ours.shape == ref.shape and ours.dtype == torch.bfloat16
    err, their_err = (ours.float() - ref).abs().max().item(), (theirs.float() - ref).abs().max().item()
    assert err <= 1.5 * their_err + 2e-3, (err, their_err)
    # free reshape for the projection after it: the memory is (B, T, H, D)
    assert ours.transpose(1, 2).is_contiguous()


def vit_with_64_dim_heads():
    torch.manual_seed(0)
    cfg = dataclasses.replace(LSegConfig.tiny_vit(), vit_dim=128, vit_heads=2)
    return LSegNet.from_config(cfg)


def attentions(net):
    return [blk.attn for blk in net.pretrained.model.blocks]


def test_bf16_predictor_uses_the_kernel_and_agrees(kernel):
    net = vit_with_64_dim_heads()
    plain = Predictor(copy.deepcopy(net), precision="bf16", cpu_attention=False)
    fast = Predictor(net, precision="bf16")
    assert fast.cpu_attention and not plain.cpu_attention
    assert all(isinstance(a, cpu_attention.KernelAttentionMixin) for a in attentions(net))
    r = agreement_on_images(plain, fast, photos(), plain.encode_labels(LABELS))
    assert r["argmax_agreement"] >= 0.99, r
    seen = []
    handles = [a.register_forward_pre_hook(lambda m, i: seen.append(m)) for a in attentions(net)]
    try:
        fast.predict(photos()[0], LABELS)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == len(attentions(net))  # the node's cancellation hooks still fire


def test_kernel_only_where_it_applies(kernel):
    net = vit_with_64_dim_heads()
    Predictor(net, precision="bf16")
    assert all(isinstance(a, cpu_attention.KernelAttentionMixin) for a in attentions(net))
    Predictor(net, precision="bf16", cpu_attention=False)  # restored: timm's own forward again
    assert all(type(a).__name__ == "Attention" for a in attentions(net))
    assert not Predictor(vit_with_64_dim_heads(), precision="fp32").cpu_attention
    small = LSegNet.from_config(LSegConfig.tiny_vit())  # head dim 16: not eligible
    assert not Predictor(small, precision="bf16").cpu_attention
    with pytest.raises(ValueError, match="cpu_attention is for bf16"):
        Predictor(vit_with_64_dim_heads(), precision="fp32", cpu_attention=True)
