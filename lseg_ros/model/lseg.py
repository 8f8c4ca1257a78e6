"""LSegNet: dense CLIP-aligned image features scored against text (docs/model.md §1).

    logits = (1/0.07) * <normalise(head1(decoder(backbone(x)))), normalise(text)>
    -> optional spatial-regularisation blocks (docs/model.md §1.5) -> bilinear x2 (align_corners=True)

Submodule names follow the released checkpoints (`pretrained`, `scratch`; `clip_pretrained`
becomes `text.tower`), so loading is a prefix rename (see checkpoint.py).
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint
from .backbones import build_backbone
from .blocks import Scratch
from .config import LSegConfig
from .devices import resolve_device
from .text import TextEncoder

log = logging.getLogger(__name__)

__all__ = ["LSegNet", "convert_checkpoint", "resolve_device"]


class LSegNet(nn.Module):
    """The LSeg network. Build with `from_config` (random weights) or `from_checkpoint`."""

    def __init__(self, config: LSegConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = build_backbone(config)
        self.scratch = Scratch(config.reassemble, config.features, config.out_dim,
                               config.spatial_block, config.activation)
        self.text = TextEncoder(config)
        # Normalisation travels with the weights; non-persistent so checkpoints stay pure weights.
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.untrained = True

    # ---- builders ---------------------------------------------------------------
    @classmethod
    def from_config(cls, config: LSegConfig, device: Union[str, torch.device] = "cpu") -> "LSegNet":
        """Random (untrained) weights, eval mode. For tests, or to load weights into later."""
        return cls(config).to(resolve_device(device)).eval()

    @classmethod
    def from_checkpoint(cls, path, spatial_block: Optional[str] = None, block_depth: int = 0,
                        activation: str = "lrelu", device: Union[str, torch.device] = "cpu",
                        config: Optional[LSegConfig] = None) -> "LSegNet":
        """Load a released Lightning checkpoint or the project's own safetensors file.

        The format is recognised by content; the released backbone by marker keys. The
        spatial-block options describe the released model (they are not stored in it); the
        own format records them and they need not be repeated. `config` overrides the
        architecture of a released-layout file (used by tests with tiny models).
        Returns the model in eval mode. Raises `CheckpointError` (a ValueError) on failure.
        """
        return checkpoint.load_checkpoint(path, cls, spatial_block=spatial_block, block_depth=block_depth,
                                          activation=activation, device=device, config=config)

    def stage_modules(self) -> List[nn.Module]:
        """Modules of the image path that every forward calls, in order, a few hundred ms apart at
        most on a CPU: each ViT block's attention and MLP (called directly under fp16/bf16, where
        the block itself is not: backbones._block), each ResNet block, the reassemble stages, the
        decoder's fusion blocks and head. For forward pre-hooks (the node's cancellation)."""
        mods: List[nn.Module] = []
        if self.config.backbone == "vit":
            for blk in list(self.pretrained.model.blocks)[:max(self.config.vit_taps) + 1]:
                parts = [getattr(blk, "attn", None), getattr(blk, "mlp", None)]
                mods += parts if all(p is not None for p in parts) else [blk]
            mods += [getattr(self.pretrained, f"act_postprocess{i}")[0] for i in range(1, 5)]  # readouts
        else:
            for layer in (self.pretrained.layer1, self.pretrained.layer2, self.pretrained.layer3,
                          self.pretrained.layer4):
                mods += list(layer.children())
        mods += [getattr(self.scratch, f"refinenet{i}") for i in (4, 3, 2, 1)] + [self.scratch.head1]
        return mods

    def unused_modules(self) -> List[nn.Module]:
        """Submodules that the released checkpoints store but the image path never runs: refinenet4's
        first residual unit and, for the ViT, timm's blocks after the last tap, final norm and head.
        Training freezes them: they would get no gradient, and DDP waits for every trainable one's."""
        vit = self.pretrained.unused_modules() if self.config.backbone == "vit" else []
        return vit + [self.scratch.refinenet4.resConfUnit1]

    # ---- inference --------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw strings (used as given, no splitting or templates) -> (N, out_dim) unit-norm float32."""
        return self.text(texts)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, out_dim, H/2, W/2) unnormalised features."""
        _, _, h, w = x.shape
        if h % 32 or w % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {h}x{w} "
                             "(the Predictor pads any image size)")
        return self.scratch(self.pretrained(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, out_dim, H/2, W/2) float32 unit-norm pixel embeddings.

        The text-independent part of the network (what the Predictor compiles / graph-captures);
        plain L2 normalisation without eps (docs/model.md §1.4), in float32 whatever the weights' dtype."""
        feats = self.image_features(x).float()
        return feats / feats.norm(dim=1, keepdim=True)

    def score(self, emb: torch.Tensor, text: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        """Unit-norm pixel embeddings (B, D, h, w), text (N, D) or (B, N, D) -> (B, N, 2h, 2w) logits.

        The label-dependent step, float32, any shapes (a new label set never recompiles): cosine
        similarity x 1/0.07, the optional spatial block (docs/model.md §1.5), bilinear x2 (align_corners=True).
        The matmul is done in float32 (the reference's .half() only adds rounding).
        upsample=False: the (B, N, h, w) logits before the x2 step (postprocess.summarize_upsampled)."""
        per_sample = text.ndim == 3 and text.shape[0] == emb.shape[0]
        if not (text.ndim == 2 or per_sample) or text.shape[-1] != self.config.out_dim:
            raise ValueError(f"text features must be (N, {self.config.out_dim}) or (B={emb.shape[0]}, N, "
                             f"{self.config.out_dim}), got {tuple(text.shape)}")
        text = text.to(device=emb.device, dtype=torch.float32)
        text = text / text.norm(dim=-1, keepdim=True)
        emb = emb.float()
        if emb.dim() == 4 and emb.shape[1] > 1 and emb.is_contiguous(memory_format=torch.channels_last):
            logits = self._cosine_channels_last(emb, text)
        else:
            logits = torch.einsum("bchw,bnc->bnhw" if per_sample else "bchw,nc->bnhw", emb, text)
        logits = self.config.logit_scale * logits
        if self.scratch.head_block is not None:
            logits = self.scratch.head_block.apply_stack(logits, self.config.block_depth)
        if not upsample:
            return logits
        return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)

    @staticmethod
    def _cosine_channels_last(emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The einsum of `score` for channels-last embeddings (the CPU default), as one matmul laid out
        for the memory: einsum picks a strided product that took 52 ms for 3 labels at 240x320
        embeddings (this matmul: 6 ms) and 156 ms for 150 (117 ms). Returns contiguous (B, N, h, w)."""
        b, d, h, w = emb.shape
        pixels = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)  # a view: the memory is (B, h, w, D)
        n = text.shape[-2]
        if n <= 16:  # (h*w, D) x (D, N): few labels, one pass over the pixels
            return torch.matmul(pixels, text.transpose(-1, -2)).transpose(1, 2).reshape(b, n, h, w).contiguous()
        return torch.matmul(text, pixels.transpose(1, 2)).reshape(b, n, h, w)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image, (N, D) text features -> (B, N, H, W) float32 logits.

        ``text`` may also be (B, N, D): labels per sample (the zero-shot ['others', c] batches
        of docs/model.md §1.8), computed exactly as N labels for that sample alone would be."""
        if text.shape[-1] != self.config.out_dim or text.ndim not in (2, 3):
            raise ValueError(f"text features must be (N, {self.config.out_dim}) or (B={x.shape[0]}, N, "
                             f"{self.config.out_dim}), got {tuple(text.shape)}")
        return self.score(self.embed(x), text)

    def extra_repr(self) -> str:
        c = self.config
        return (f"backbone={c.backbone}, out_dim={c.out_dim}, spatial_block={c.spatial_block}, "
                f"untrained={self.untrained}")


def convert_checkpoint(src, dst, spatial_block: Optional[str] = None, block_depth: int = 0,
                       activation: str = "lrelu", config: Optional[LSegConfig] = None) -> str:
    """Released Lightning file -> the project's safetensors file (see checkpoint.convert_checkpoint)."""
    return checkpoint.convert_checkpoint(src, dst, LSegNet, spatial_block=spatial_block, block_depth=block_depth,
                                         activation=activation, config=config)
