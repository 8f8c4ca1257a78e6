"""Fast CPU tests of the LSeg network on tiny random-weight configurations."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lseg_ros.model import LSegConfig, LSegNet  # noqa: E402

LABELS = ["dog", "grass", "other", "a red car", "sky"]


@pytest.fixture(scope="module", params=["tiny_vit", "tiny_resnet"])
def net(request):
    torch.manual_seed(0)
    return LSegNet.from_config(getattr(LSegConfig, request.param)())


def test_shapes_dtype_and_range(net):
    text = net.encode_text(LABELS)
    assert text.shape == (5, net.config.out_dim) and text.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=1), torch.ones(5))
    for h, w in [(64, 64), (96, 128), (160, 96)]:
        with torch.no_grad():
            out = net(torch.randn(2, 3, h, w), text)
        assert out.shape == (2, 5, h, w) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert out.abs().max() <= net.config.logit_scale + 1e-4  # scaled cosine similarities
    assert net.untrained and not net.training


def test_size_not_multiple_of_32_is_refused(net):
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 3, 80, 64), net.encode_text(["a"]))


def test_text_tower_frozen_and_raw_strings(net):
    assert not any(p.requires_grad for p in net.text.parameters())
    net.train()
    assert not net.text.training  # CLIP stays in eval mode (docs/model.md §1.6)
    net.eval()
    a = net.encode_text(["Traffic  Light!", "café"])
    b = net.encode_text(["café"])
    torch.testing.assert_close(a[1], b[0])
    with pytest.raises(ValueError, match="no label"):
        net.encode_text([])
    with pytest.raises(ValueError, match="at most 77"):
        net.encode_text(["word " * 80])


@pytest.mark.parametrize("block,depth,act", [(None, 0, "lrelu"), ("bottleneck", 2, "lrelu"),
                                             ("depthwise", 2, "tanh"), ("bottleneck", 3, "relu")])
def test_label_permutation_permutes_channels(block, depth, act):
    torch.manual_seed(1)
    net = LSegNet.from_config(LSegConfig.tiny_vit(spatial_block=block, block_depth=depth, activation=act))
    if block:  # random init of a 1x1x3x3 conv can be near zero; make the block matter
        torch.nn.init.normal_(net.scratch.head_block.depthwise.depthwise.weight, std=0.5)
    text = net.encode_text(LABELS)
    perm = torch.tensor([3, 0, 4, 1, 2])
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = net(x, text), net(x, text[perm])
    torch.testing.assert_close(b, a[:, perm], atol=1e-5, rtol=1e-5)


def test_spatial_block_keys_match_release():
    net = LSegNet.from_config(LSegConfig.tiny_vit(spatial_block="depthwise", block_depth=1))
    keys = {k for k in net.state_dict() if "head_block" in k}
    assert keys == {"scratch.head_block.depthwise.depthwise.weight", "scratch.head_block.depthwise.depthwise.bias"}


def test_vit_pos_embed_resampling_is_bilinear():
    net = LSegNet.from_config(LSegConfig.tiny_vit())
    vit = net.pretrained
    pos = vit.resized_pos_embed(3, 5)
    assert pos.shape == (1, 1 + 15, 64)
    grid = vit.model.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(3, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 15, 64))
    assert vit.resized_pos_embed(4, 4) is vit.model.pos_embed


def test_gradients_flow_to_image_side_only():
    net = LSegNet.from_config(LSegConfig.tiny_vit()).train()
    out = net(torch.randn(1, 3, 64, 64), net.encode_text(["a", "b"]))
    out.sum().backward()
    assert net.scratch.head1.weight.grad is not None
    assert net.pretrained.model.blocks[0].attn.qkv.weight.grad is not None
    # the CLIP text tower is frozen: no gradient reaches any of its parameters
    text_params = list(net.text.parameters())
    assert text_params and all(p.grad is None and not p.requires_grad for p in text_params)


def test_config_json_round_trip_and_named_variants():
    for cfg in (LSegConfig.vitl16(), LSegConfig.rn101(), LSegConfig.tiny_vit(spatial_block="bottleneck")):
        assert LSegConfig.from_json(cfg.to_json()) == cfg
    assert LSegConfig.rn101().mean == (0.485, 0.456, 0.406) and LSegConfig.vitl16().std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="spatial_block"):
        LSegConfig.tiny_vit(spatial_block="foo")


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        LSegNet.from_config(LSegConfig.tiny_vit(), device="cuda")


def test_model_imports_without_ros():
    code = ("import sys; sys.modules['rclpy'] = None; import lseg_ros.model; "
            "assert not any(m.startswith(('rclpy', 'sensor_msgs')) for m in sys.modules if sys.modules[m])")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_text_encoded_without_padding_equals_whole_context(net):
    """Label texts run only up to the longest one's end token (causal mask, end-token pooling):
    the same features as the tower on all 77 positions, for short and long texts in one batch."""
    from lseg_ros.model.text import tokenize
    labels = ["dog", "a photo of a red car", "Traffic  Light!", "café", "word " * 60]
    with torch.no_grad():
        whole = torch.nn.functional.normalize(net.text.tower(tokenize(labels)).float(), dim=-1)
    torch.testing.assert_close(net.encode_text(labels), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(net.encode_text(labels[:1]), whole[:1], atol=1e-6, rtol=0)
