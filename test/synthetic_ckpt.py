"""Synthetic checkpoints in the released LSeg layout, for tests (no real weights exist here).

`spec_weights` reproduces the deterministic rule that the reference logits in
test/data/lseg-reference were recorded with (docs/model.md §5): every
tensor is drawn from numpy's default_rng(20260427 ^ crc32(key)) by its key's last name
part, in float64, then cast to the spec dtype. `write_lightning` writes a file shaped like
the released PyTorch-Lightning 1.x checkpoints, including a `callbacks` dict keyed by a
class from a `pytorch_lightning` module that is not installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import torch

BASE_SEED = 20260427
DATA = Path(__file__).parent / "data" / "lseg-reference"
_NORM_MARKERS = ("norm", "ln_", ".bn", "bn1", "bn2", "layer1.1.", ".downsample.1.")


def cache_dir() -> Path:
    d = Path(os.environ.get("LSEG_TEST_CACHE", Path.home() / ".cache" / "lseg_ros_test"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _draw(key: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    last = key.rsplit(".", 1)[-1]
    if last == "num_batches_tracked":
        return np.zeros(shape)
    if last == "running_var":
        return rng.uniform(0.5, 1.5, shape)
    if last == "running_mean":
        return rng.normal(0.0, 0.1, shape)
    if last == "logit_scale":
        return np.full(shape, np.log(100.0))
    if last == "weight" and len(shape) == 1 and any(m in key for m in _NORM_MARKERS):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if last in ("bias", "in_proj_bias") or (last == "weight" and len(shape) == 1):
        return 0.02 * rng.standard_normal(shape)
    if (len(shape) <= 1 or last in ("cls_token", "pos_embed", "positional_embedding", "class_embedding")
            or "token_embedding" in key):
        return 0.02 * rng.standard_normal(shape)
    fan_in = shape[0] if last in ("text_projection", "proj") else int(np.prod(shape[1:]))
    return rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))


def spec_weights(spec) -> dict:
    """[(key, shape, dtype name)] -> {key: tensor} by the fixture rule."""
    out = {}
    for key, shape, dtype in spec:
        rng = np.random.default_rng(BASE_SEED ^ zlib.crc32(key.encode()))
        arr = np.asarray(_draw(key, tuple(shape), rng), dtype=np.float64)
        out[key] = torch.from_numpy(arr).to(getattr(torch, dtype))
    return out


def load_spec(path=DATA / "spec_vitl16.json"):
    with open(path) as f:
        return [(k, tuple(s), d) for k, s, d in json.load(f)]


@contextlib.contextmanager
def _fake_lightning():
    """A `pytorch_lightning...ModelCheckpoint` class that exists only while pickling."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = cls
    try:
        yield cls
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def write_lightning(state_dict: dict, out_path, extra: dict | None = None) -> Path:
    """Write `state_dict` (keys with 'net.') as a PL 1.x checkpoint; atomic (tmp + rename)."""
    out_path = Path(out_path)
    with _fake_lightning() as callback_cls:
        ckpt = {
            "epoch": 199,
            "global_step": 123456,
            "pytorch-lightning_version": "1.4.9",
            "state_dict": state_dict,
            "callbacks": {callback_cls: {"monitor": "val_acc_epoch", "best_model_score": torch.tensor(0.8),
                                         "best_model_path": "checkpoints/demo_e200.ckpt"}},
            "optimizer_states": [{"state": {0: {"momentum_buffer": torch.zeros(4)}},
                                  "param_groups": [{"lr": 0.004, "momentum": 0.9}]}],
            "lr_schedulers": [{"base_lrs": [0.004], "last_epoch": 200}],
            **(extra or {}),
        }
        tmp = out_path.with_name(out_path.name + ".part")
        torch.save(ckpt, tmp)
    os.replace(tmp, out_path)
    return out_path


def released_vitl16(path=None) -> Path:
    """The 1.7 GB synthetic ViT-L/16 checkpoint the golden logits were recorded with (cached)."""
    path = Path(path or cache_dir() / "synthetic_vitl16_demo.ckpt")
    if not path.exists():
        write_lightning(spec_weights(load_spec()), path)
    return path


def rn101_spec() -> list:
    """ResNet-101 released layout: keys/shapes from the reference key list, dtypes like the ViT file."""
    vit_dtypes = {k: d for k, _, d in load_spec()}
    spec = []
    with open(DATA / "keys-rn101.txt") as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")[:2]
            shape = tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")))
            dtype = "int64" if key.endswith("num_batches_tracked") else vit_dtypes.get(key, "float32")
            spec.append((key, shape, dtype))
    return spec


def released_rn101(path=None) -> Path:
    path = Path(path or cache_dir() / "synthetic_rn101_fss.ckpt")
    if not path.exists():
        write_lightning(spec_weights(rn101_spec()), path)
    return path


def released_from_net(net, path, drop=(), clip_visual: bool = True) -> Path:
    """A released-layout file from a (tiny) LSegNet: the inverse of the loader's renames."""
    sd = {}
    for k, v in net.state_dict().items():
        if k.startswith("text.tower."):
            k = "clip_pretrained." + k[len("text.tower."):]
        sd["net." + k] = v.half() if k.startswith("clip_pretrained.") and v.ndim == 2 else v
    if clip_visual:  # released files carry CLIP's unused visual tower and logit scale
        sd["net.clip_pretrained.visual.proj"] = torch.zeros(8, 4, dtype=torch.float16)
        sd["net.clip_pretrained.logit_scale"] = torch.tensor(np.log(100.0), dtype=torch.float32)
    for k in drop:
        del sd[k]
    return write_lightning(sd, path)
