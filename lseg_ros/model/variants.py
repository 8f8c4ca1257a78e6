"""The named LSeg variants: name -> architecture, backbone and released checkpoints (docs/model.md §1.9).

The one list the node's `model` parameter, the tools' `--config`, the checkpoint loader (which
released layout a file has) and the benchmarks read. No torch here: the node checks its parameters
without loading the model library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Tuple

from .config import LSegConfig


@dataclass(frozen=True)
class Variant:
    """A named architecture.

    Attributes:
        name: what users type (`model:=vitl16`, `--config vitl16`).
        title: how reports name it ("ViT-L/16").
        build: the `LSegConfig` builder (keyword overrides allowed).
        released: (file name, what it is) of the released checkpoints in this layout (empty: a test
            variant, random weights only).
        marker: a key prefix that only this variant's released files hold (docs/model.md §2.1).
    """

    name: str
    title: str
    build: Callable[..., LSegConfig]
    released: Tuple[Tuple[str, str], ...] = ()
    marker: Optional[str] = None

    @property
    def backbone(self) -> str:
        return self.build().backbone

    def config(self, **overrides) -> LSegConfig:
        return self.build(**overrides)


VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant("vitl16", "ViT-L/16", LSegConfig.vitl16,
            (("demo_e200.ckpt", "trained on 7 datasets; the demo model"), ("fss_l16.ckpt", "zero-shot (FSS-1000)")),
            marker="net.pretrained.model.blocks."),
    Variant("rn101", "ResNet-101", LSegConfig.rn101,
            (("fss_rn101.ckpt", "zero-shot (FSS-1000)"),
             *((f"pascal_fold{i}.ckpt", f"zero-shot, PASCAL-5i fold {i}") for i in range(4))),
            marker="net.pretrained.layer1.4."),
    Variant("tiny_vit", "tiny ViT (tests)", LSegConfig.tiny_vit),
    Variant("tiny_resnet", "tiny ResNet (tests)", LSegConfig.tiny_resnet),
)}
NAMES: Tuple[str, ...] = tuple(VARIANTS)
RELEASED: Tuple[str, ...] = tuple(n for n, v in VARIANTS.items() if v.released)


def variant(name: str) -> Variant:
    """The variant called `name`; ValueError naming the choices otherwise."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(NAMES)}") from None


def named_config(name: str, **overrides) -> LSegConfig:
    """The `LSegConfig` of variant `name` (ValueError naming the choices for an unknown name)."""
    return variant(name).config(**overrides)


def released_variant(keys: Iterable[str]) -> Optional[Variant]:
    """The released variant whose marker keys appear among a released file's `keys`, or None."""
    keys = list(keys)
    for v in VARIANTS.values():
        if v.marker and any(k.startswith(v.marker) for k in keys):
            return v
    return None
