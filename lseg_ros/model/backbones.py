"""Image backbones of LSeg: DPT-style ViT (docs/model.md §1.1-1.2) and ResNet-101 (§1.7).

Both return four feature maps at H/4, H/8, H/16, H/32. The ViT forward is written here
over timm's public modules (patch_embed, cls_token, pos_embed, blocks) instead of hooks
or a patched `forward_flex`, so the position embedding is resampled exactly as the
reference does it (bilinear, align_corners=False, no antialiasing); timm's own
`dynamic_img_size` resamples bicubically and would not match.
"""
from __future__ import annotations

from typing import List

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import make_reassemble, run_reassemble
from .config import LSegConfig


class ViTBackbone(nn.Module):
    """`pretrained` of the ViT models: `model` (timm ViT) and `act_postprocess{1..4}`."""

    def __init__(self, cfg: LSegConfig) -> None:
        super().__init__()
        self.taps = tuple(cfg.vit_taps)
        self.patch = cfg.patch
        self.model = timm.create_model(
            cfg.vit_name, pretrained=False, img_size=cfg.base_grid * cfg.patch, patch_size=cfg.patch,
            embed_dim=cfg.vit_dim, depth=cfg.vit_depth, num_heads=cfg.vit_heads, num_classes=cfg.vit_head_classes)
        for i, c in enumerate(cfg.reassemble, start=1):
            setattr(self, f"act_postprocess{i}", make_reassemble(cfg.vit_dim, c, i))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the blocks while gradients are recorded: each block keeps only
        its input and runs again in the backward pass (timm's name for it; ViT blocks hold no batch
        norm, so the second run changes no statistics)."""
        self.grad_checkpointing = enable

    def unused_modules(self) -> List[nn.Module]:
        """timm's parts that `forward` never runs: blocks after the last tap, the final norms, the head."""
        m = self.model
        names = ("norm_pre", "norm", "fc_norm", "attn_pool", "head")
        return list(m.blocks)[max(self.taps) + 1:] + [getattr(m, n) for n in names if getattr(m, n, None) is not None]

    def resized_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Stored (1, 1+g*g, C) embedding resampled to the input's patch grid (docs/model.md §1.1)."""
        pos = self.model.pos_embed
        cls_pos, grid = pos[:, :1], pos[:, 1:]
        g = int(round(grid.shape[1] ** 0.5))
        if (g, g) == (grid_h, grid_w):
            return pos
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([cls_pos, grid], dim=1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        m = self.model
        b, _, h, w = x.shape
        gh, gw = h // self.patch, w // self.patch
        tokens = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = m.patch_embed.norm(tokens)  # Identity for these models; kept for generality
        tokens = torch.cat([m.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = m.pos_drop(tokens + self.resized_pos_embed(gh, gw))
        low = tokens.dtype
        if low != torch.float32:
            tokens = tokens.float()  # fp32 residual stream under fp16/bf16 weights (see _block)
        taps = []
        last = max(self.taps)
        save_memory = self.grad_checkpointing and torch.is_grad_enabled()
        for i, blk in enumerate(m.blocks):
            if save_memory:
                tokens = checkpoint(_block, blk, tokens, low, use_reentrant=False)
            else:
                tokens = _block(blk, tokens, low)
            if i in self.taps:
                taps.append(tokens.to(low))
            if i == last:  # later blocks and the final norm do not reach the output
                break
        return [run_reassemble(getattr(self, f"act_postprocess{i + 1}"), t, gh, gw) for i, t in enumerate(taps)]


def _block(blk: nn.Module, x: torch.Tensor, low: torch.dtype) -> torch.Tensor:
    """One timm ViT block. With fp16/bf16 weights the residual stream stays float32 and only the
    branches (norm, attention, MLP) run in `low`: 24 residual additions rounded to bf16 cost about
    half a point of argmax agreement with fp32 (measured on the reference weights), the casts cost
    almost nothing. fp32: timm's own forward, unchanged."""
    if low == torch.float32 or not all(hasattr(blk, a) for a in ("norm1", "attn", "ls1", "drop_path1",
                                                                   "norm2", "mlp", "ls2", "drop_path2")):
        return blk(x.to(low)).float() if low != torch.float32 else blk(x)
    x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x.to(low))))).float()
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x.to(low))))).float()


class ResNetBackbone(nn.Module):
    """`pretrained` of the ResNet model: torchvision ResNet repackaged as layer1..layer4 (docs/model.md §1.7)."""

    def __init__(self, cfg: LSegConfig) -> None:
        super().__init__()
        if cfg.resnet_block == "bottleneck" and tuple(cfg.resnet_layers) == (3, 4, 23, 3):
            net = torchvision.models.resnet101(weights=None)
        else:
            block = {"bottleneck": torchvision.models.resnet.Bottleneck,
                     "basic": torchvision.models.resnet.BasicBlock}[cfg.resnet_block]
            net = torchvision.models.resnet.ResNet(block, list(cfg.resnet_layers))
        self.layer1 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return [l1, l2, l3, self.layer4(l3)]


def build_backbone(cfg: LSegConfig) -> nn.Module:
    return ViTBackbone(cfg) if cfg.backbone == "vit" else ResNetBackbone(cfg)
