"""Text side of LSeg (docs/model.md §1.6): the frozen CLIP ViT-B/32 text tower and labels.

The tower is open_clip's `TextTransformer` built with the text settings of open_clip's
`ViT-B-32-quickgelu` config (QuickGELU, causal mask, EOT pooling), which has the same
keys as OpenAI CLIP; its weights come from the LSeg checkpoint (`net.clip_pretrained.*`),
never from a download. The visual tower is not built.

Labels: "person|pedestrian|people" lists alternatives whose embeddings are averaged;
optional prompt templates ("a photo of a {}.") are averaged the same way, as open_clip's
`build_zero_shot_classifier` does. Text longer than the 77-token context is refused
(ValueError naming it) rather than silently truncated.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, TextTransformer
from torch import nn

from .config import LSegConfig
from .labels import parse_labels

_versions = itertools.count(1)


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77) -> open_clip.SimpleTokenizer:
    """open_clip's CLIP BPE tokenizer (vocabulary ships in the package; no download)."""
    return open_clip.SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """Token ids (N, context) as CLIP makes them; raises ValueError for text that does not fit."""
    tok = get_tokenizer(context_length)
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"label texts must be str, got {type(text).__name__}: {text!r}")
        ids = [tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id]
        if len(ids) > context_length:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise ValueError(f"label text {shown!r} is {len(ids)} tokens long; CLIP's text tower takes at most "
                             f"{context_length} (including start/end tokens): shorten it")
        out[i, :len(ids)] = torch.tensor(ids)
    return out


class TextEncoder(nn.Module):
    """Frozen CLIP text tower: list of strings -> (N, out_dim) float32 unit-norm features."""

    def __init__(self, cfg: LSegConfig) -> None:
        super().__init__()
        if cfg.text_model:
            mc = open_clip.get_model_config(cfg.text_model)
            if mc is None:
                raise ValueError(f"unknown open_clip model config {cfg.text_model!r}")
            tc = mc["text_cfg"]
            width, heads, layers = tc["width"], tc["heads"], tc["layers"]
            ctx, vocab, out_dim = tc.get("context_length", 77), tc.get("vocab_size", 49408), mc["embed_dim"]
            act = QuickGELU if mc.get("quick_gelu", False) else nn.GELU
        else:  # tiny test tower: same structure, real tokenizer vocabulary
            width, heads, layers = cfg.text_width, cfg.text_heads, cfg.text_layers
            ctx, vocab, out_dim, act = cfg.context_length, 49408, cfg.out_dim, QuickGELU
        if out_dim != cfg.out_dim:
            raise ValueError(f"text tower {cfg.text_model!r} gives {out_dim}-d features, "
                             f"config out_dim is {cfg.out_dim}")
        self.context_length = ctx
        self.tower = TextTransformer(context_length=ctx, vocab_size=vocab, width=width, heads=heads,
                                     layers=layers, output_dim=out_dim, act_layer=act)
        self.freeze()

    def freeze(self) -> "TextEncoder":
        """CLIP is never trained in LSeg (docs/model.md §1.6): no gradients, eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "TextEncoder":
        # Stay in eval mode even when the parent module is put in training mode.
        return super().train(False)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("pass a list of label strings, not a single string")
        if len(texts) == 0:
            raise ValueError("no label texts given")
        device = self.tower.token_embedding.weight.device
        tokens = tokenize(list(texts), self.context_length).to(device)
        with torch.no_grad():
            feats = self._encode(tokens).float()
        return F.normalize(feats, dim=-1)

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower on the tokens up to the longest text's end token only.

        With the causal mask and end-token pooling of CLIP, positions after a text's end token never
        reach its feature, so the padding up to 77 is dropped: labels are a few tokens long and a
        10-label switch runs ~10x faster (the same result up to float rounding, checked against the
        recorded reference text features). Other tower kinds run whole, through open_clip's forward."""
        tower = self.tower
        plain = (tower.cls_emb is None and not getattr(tower, "use_pad_mask", False) and tower.attn_mask is not None
                 and tower.pool_type == "argmax")
        if not plain:
            return tower(tokens)
        length = int(tokens.argmax(dim=1).max()) + 1  # the end token has the highest id (CLIP's BPE)
        tokens = tokens[:, :length]
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:length].to(cast)
        x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask[:length, :length]))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        proj = tower.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


# ---- label sets --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LabelSet:
    """An encoded, immutable label set. `version` is unique per encoding in this process."""

    names: Tuple[str, ...]
    texts: Tuple[str, ...]
    embeddings: torch.Tensor  # (N, D) float32, unit norm
    templates: Optional[Tuple[str, ...]] = None
    version: int = field(default_factory=lambda: next(_versions))

    def __len__(self) -> int:
        return len(self.names)


def encode_label_set(encoder: TextEncoder, labels: Sequence[str],
                     templates: Optional[Sequence[str]] = None) -> LabelSet:
    """Encode labels once: every alternative x template, averaged, re-normalised."""
    names, alts = parse_labels(labels)
    if templates is not None:
        templates = tuple(templates)
        if not templates or any(not isinstance(t, str) or "{}" not in t for t in templates):
            raise ValueError(f"templates must be a non-empty list of strings containing '{{}}', got {templates!r}")
    prompts: List[str] = []
    owner: List[int] = []
    for i, parts in enumerate(alts):
        for p in parts:
            for t in templates or ("{}",):
                prompts.append(t.format(p))
                owner.append(i)
    try:
        feats = encoder(prompts)
    except ValueError as e:
        raise ValueError(f"cannot encode labels: {e}") from None
    index = torch.tensor(owner, device=feats.device)
    summed = torch.zeros(len(names), feats.shape[1], device=feats.device).index_add_(0, index, feats)
    emb = F.normalize(summed, dim=-1)  # mean direction = normalised sum of unit vectors
    return LabelSet(names=names, texts=tuple(labels), embeddings=emb, templates=templates)
