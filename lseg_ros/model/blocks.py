"""Building blocks of LSeg's dense decoder (docs/model.md §1.2, §1.3, §1.5).

Module and attribute names follow the released checkpoints (`act_postprocess{i}`
Sequential indices 0/3/4, `scratch.layer{i}_rn`, `refinenet{i}.resConfUnit{1,2}`,
`head_block.depthwise.depthwise`) so a released state_dict maps onto these modules by
plain prefix renames.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ProjectReadout(nn.Module):
    """'project' readout (docs/model.md §1.2): concat every patch token with the cls token, Linear + GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat([patches, readout], dim=-1))


def make_reassemble(dim: int, out_channels: int, stage: int) -> nn.Sequential:
    """One reassemble stage; index 1/2 are parameter-free placeholders kept for the key layout.

    Stage 1 upsamples x4 (ConvTranspose k4 s4), stage 2 x2, stage 3 keeps H/16, stage 4
    downsamples with a strided 3x3 conv (docs/model.md §1.2).
    """
    if stage == 1:
        resample: nn.Module = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=4, stride=4)
    elif stage == 2:
        resample = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2, stride=2)
    elif stage == 3:
        resample = nn.Identity()
    elif stage == 4:
        resample = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
    else:
        raise ValueError(f"stage must be 1..4, got {stage}")
    return nn.Sequential(ProjectReadout(dim), nn.Identity(), nn.Identity(),
                         nn.Conv2d(dim, out_channels, kernel_size=1), resample)


def run_reassemble(seq: nn.Sequential, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Tokens (B, 1+h*w, C) -> feature map; the reshape to the actual grid replaces index 2 (docs/model.md §1.2)."""
    x = seq[0](tokens)
    x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid_h, grid_w)
    return seq[4](seq[3](x))


class ResidualConvUnit(nn.Module):
    """DPT ResidualConvUnit_custom with BatchNorm: x + bn2(conv2(relu(bn1(conv1(relu(x))))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # No conv bias: BatchNorm follows each conv (the released keys have none).
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(features)
        self.bn2 = nn.BatchNorm2d(features)
        self.activation = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(self.activation(x)))
        out = self.bn2(self.conv2(self.activation(out)))
        return out + x


class FeatureFusionBlock(nn.Module):
    """DPT FeatureFusionBlock_custom (bn=True, expand=False, align_corners=True), docs/model.md §1.3."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # resConfUnit1 is unused by refinenet4 but stored in the checkpoints: keep it.
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = x if skip is None else x + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(out)


class DepthwiseConv(nn.Module):
    """One 3x3 conv shared by every label map, so label order does not matter (docs/model.md §1.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(1, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h, w = x.shape
        return self.depthwise(x.reshape(b * n, 1, h, w)).reshape(b, n, h, w)


_ACTIVATIONS = {"relu": nn.ReLU, "lrelu": nn.LeakyReLU, "tanh": nn.Tanh}


class SpatialBlock(nn.Module):
    """bottleneck_block / depthwise_block of docs/model.md §1.5; stored at `scratch.head_block`.

    bottleneck: act(conv(x) + max over labels of x); depthwise: act(conv(x)). Both the max
    and the shared conv are symmetric in the label axis, hence permutation equivariant.
    """

    def __init__(self, kind: str, activation: str) -> None:
        super().__init__()
        if kind not in ("bottleneck", "depthwise"):
            raise ValueError(f"unknown spatial block {kind!r}")
        self.kind = kind
        self.depthwise = DepthwiseConv()
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, activate: bool = True) -> torch.Tensor:
        y = self.depthwise(x)
        if self.kind == "bottleneck":
            y = y + x.max(dim=1, keepdim=True)[0]
        return self.activation(y) if activate else y

    def apply_stack(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Reference order: (depth-1) activated calls, then one call without activation.

        The same module (shared weights) is reused; depth 0 still runs the final call,
        exactly as the reference does.
        """
        for _ in range(depth - 1):
            x = self(x)
        return self(x, activate=False)


class Scratch(nn.Module):
    """The decoder (`scratch`, docs/model.md §1.3-1.5): 3x3 projections, four fusion blocks, head to out_dim."""

    def __init__(self, in_channels: Sequence[int], features: int, out_dim: int,
                 spatial_block: Optional[str] = None, activation: str = "lrelu") -> None:
        super().__init__()
        for i, c in enumerate(in_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FeatureFusionBlock(features))
        self.head1 = nn.Conv2d(features, out_dim, kernel_size=1)
        self.head_block = SpatialBlock(spatial_block, activation) if spatial_block else None

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        p = self.refinenet4(l4)
        p = self.refinenet3(p, l3)
        p = self.refinenet2(p, l2)
        p = self.refinenet1(p, l1)
        return self.head1(p)  # (B, out_dim, H/2, W/2)
