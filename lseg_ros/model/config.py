"""Architecture settings of an LSeg network (docs/model.md §1).

`LSegConfig` is a small frozen dataclass: it is all that is needed to build the
modules (random weights), it travels with the weights in the project's own
checkpoint format (JSON metadata), and it carries the input normalisation the
weights were trained with.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

SpatialBlock = Optional[Literal["bottleneck", "depthwise"]]
Activation = Literal["relu", "lrelu", "tanh"]

_VIT_MEAN = (0.5, 0.5, 0.5)  # docs/model.md §3.1: pixels in [-1, 1] for the ViT checkpoints
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # docs/model.md §1.7: the ResNet-101 variant uses ImageNet statistics
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LSegConfig:
    """Everything needed to build an LSeg network.

    Attributes:
        backbone: "vit" (DPT-style ViT, docs/model.md §1.1-1.2) or "resnet" (§1.7).
        vit_name: timm model name the ViT is built from (pretrained=False).
        vit_dim, vit_depth, vit_heads, patch: ViT width, blocks, heads, patch size.
        vit_taps: 0-based blocks whose outputs feed the reassemble stages.
        base_grid: side of the stored position-embedding grid (24 for ViT-L/16 @ 384).
        vit_head_classes: size of timm's (unused) classifier head; it is in the released file.
        reassemble: output channels of the four reassemble stages (docs/model.md §1.2).
        resnet_block: "bottleneck" (ResNet-101) or "basic" (tiny test net).
        resnet_layers: blocks per ResNet stage.
        features: decoder width (256, docs/model.md §1.3).
        out_dim: embedding width shared by image and text (512).
        text_model: open_clip config name of the text tower; "" = the tiny tower below.
        text_width, text_heads, text_layers: tiny text tower dims (ignored with text_model).
        context_length: tokenizer context (77, OpenAI CLIP).
        logit_scale: multiplier of the cosine similarities, 1/0.07 (docs/model.md §1.4).
        mean, std: input normalisation of these weights.
        spatial_block, block_depth, activation: the optional regularisation head (docs/model.md §1.5).
    """

    backbone: Literal["vit", "resnet"] = "vit"
    vit_name: str = "vit_large_patch16_384"
    vit_dim: int = 1024
    vit_depth: int = 24
    vit_heads: int = 16
    patch: int = 16
    vit_taps: Tuple[int, ...] = (5, 11, 17, 23)
    base_grid: int = 24
    vit_head_classes: int = 1000
    reassemble: Tuple[int, ...] = (256, 512, 1024, 1024)
    resnet_block: Literal["bottleneck", "basic"] = "bottleneck"
    resnet_layers: Tuple[int, ...] = (3, 4, 23, 3)
    features: int = 256
    out_dim: int = 512
    text_model: str = "ViT-B-32-quickgelu"
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    context_length: int = 77
    logit_scale: float = 1.0 / 0.07
    mean: Tuple[float, float, float] = _VIT_MEAN
    std: Tuple[float, float, float] = _VIT_MEAN
    spatial_block: SpatialBlock = None
    block_depth: int = 0
    activation: Activation = "lrelu"

    def __post_init__(self) -> None:
        if self.backbone not in ("vit", "resnet"):
            raise ValueError(f"backbone must be 'vit' or 'resnet', got {self.backbone!r}")
        if self.spatial_block not in (None, "bottleneck", "depthwise"):
            raise ValueError(f"spatial_block must be None, 'bottleneck' or 'depthwise', got {self.spatial_block!r}")
        if self.activation not in ("relu", "lrelu", "tanh"):
            raise ValueError(f"activation must be 'relu', 'lrelu' or 'tanh', got {self.activation!r}")
        if self.block_depth < 0:
            raise ValueError(f"block_depth must be >= 0, got {self.block_depth}")
        if self.backbone == "vit" and len(self.vit_taps) != 4:
            raise ValueError(f"vit_taps needs 4 block indices, got {self.vit_taps}")

    # ---- named variants -------------------------------------------------
    @classmethod
    def vitl16(cls, **overrides) -> "LSegConfig":
        """The released ViT-L/16 model (demo_e200.ckpt, fss_l16.ckpt), docs/model.md §1.1-1.6."""
        return cls(**overrides)

    @classmethod
    def rn101(cls, **overrides) -> "LSegConfig":
        """The released ResNet-101 model (fss_rn101.ckpt, fold checkpoints), docs/model.md §1.7."""
        base = dict(backbone="resnet", reassemble=(256, 512, 1024, 2048), mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
        return cls(**{**base, **overrides})

    @classmethod
    def tiny_vit(cls, **overrides) -> "LSegConfig":
        """A few-MB random-weight ViT variant for tests (same code paths as vitl16)."""
        base = dict(vit_dim=64, vit_depth=4, vit_heads=4, vit_taps=(0, 1, 2, 3), base_grid=4, vit_head_classes=0,
                    reassemble=(16, 32, 64, 64), features=32, out_dim=32, text_model="", text_width=64,
                    text_heads=2, text_layers=2)
        return cls(**{**base, **overrides})

    @classmethod
    def tiny_resnet(cls, **overrides) -> "LSegConfig":
        """A small random-weight ResNet variant (BasicBlock, one block per stage) for tests."""
        base = dict(backbone="resnet", resnet_block="basic", resnet_layers=(1, 1, 1, 1), reassemble=(64, 128, 256, 512),
                    features=32, out_dim=32, text_model="", text_width=64, text_heads=2, text_layers=2,
                    mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
        return cls(**{**base, **overrides})

    # ---- (de)serialisation ----------------------------------------------
    def replace(self, **changes) -> "LSegConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LSegConfig":
        raw = json.loads(text)
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"unknown LSegConfig fields {unknown}")
        # JSON has no tuples; restore them so the frozen dataclass compares and hashes equal.
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**fixed)
