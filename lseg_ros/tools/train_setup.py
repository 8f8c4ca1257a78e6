"""``lseg-train``'s set-up: its datasets as torch datasets (fixed labels and zero-shot items) and the
model's initialisation (ImageNet backbone, CLIP text tower, parameter groups). See train.py."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lseg_ros.model.frames import normalize_image
from lseg_ros.tools import folds
from lseg_ros.tools.common import ToolError, load_net
from lseg_ros.tools.data import FolderDataset, read_pair

log = logging.getLogger(__name__)


# ---- datasets as torch datasets -------------------------------------------------------------
class _TorchData(torch.utils.data.Dataset):
    """(image uint8 HWC, mask) pairs -> (normalised CHW float, mask long, class id)."""

    def __init__(self, items, loader, transform, mean, std) -> None:
        self.items, self.loader, self.transform = items, loader, transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        image, mask, cls = self.loader(self.items[i])
        image, mask = self.transform(image, mask, i)
        x = normalize_image(image, self.mean, self.std)[0]
        return x, torch.from_numpy(np.ascontiguousarray(mask)).long(), cls


def folder_items(ds: FolderDataset):
    """Fixed-label items of a folder dataset (validated once, bad ones skipped if asked)."""
    ds.validate()
    return [(i, -1) for i in range(len(ds))], (lambda it: (*ds.load(it[0]), it[1]))


def zero_shot_items_folder(ds: FolderDataset):
    """Zero-shot items from a folder dataset: one (image, class) per class present in the mask."""
    ds.validate()
    items = []
    for i in range(len(ds)):
        _, mask = ds.load(i)
        items += [(i, int(c)) for c in np.unique(mask) if c != ds.ignore_index]

    def load(it):
        image, mask = ds.load(it[0])
        return image, _binary(mask, it[1], ds.ignore_index), it[1]

    return items, load


def _binary(mask: np.ndarray, cls: int, ignore: int) -> np.ndarray:
    out = (mask == cls).astype(np.int64)
    out[mask == ignore] = ignore
    return out


def zero_shot_items_fold(benchmark: str, fold: int, root: Path, splits: Path, ignore_index: int = 255):
    """HSNet training split of a fold: its 15 (PASCAL) / 60 (COCO) seen classes. Targets are
    foreground 1 / background 0, PASCAL's boundary pixels set to ``ignore_index`` (docs/model.md §4.2)."""
    items = folds.read_split(benchmark, fold, "trn", splits)
    allowed = set(folds.fold_classes(benchmark, fold, "trn"))
    bad = [e for e in items if e.class_id not in allowed]
    if bad:
        raise ToolError(f"{folds.split_path(benchmark, fold, 'trn', splits)}: the training split of "
                        f"{benchmark} fold {fold} lists test classes, e.g. {bad[0]}")
    boundary = folds.boundary_value(benchmark)

    def load(e):
        image, mask = read_pair(*folds.image_and_mask_paths(benchmark, root, e.name))
        return image, folds.binary_target(mask, e.class_id, ignore_index, boundary), e.class_id

    return items, load


# ---- model init ---------------------------------------------------------------------------
def _read_state_dict(path: Path) -> dict:
    """Tensors of an init file, by content (safetensors, state dict, Lightning .ckpt), read
    through the model library's restricted unpickler; ``ToolError`` naming the file."""
    from lseg_ros.model.checkpoint import CheckpointError, read_state_dict

    try:
        return read_state_dict(path)
    except CheckpointError as e:
        raise ToolError(str(e)) from None


def _load_into(module: torch.nn.Module, sd: dict, what: str, path: Path) -> None:
    """Strict load, checked first (keys and shapes) so a bad file changes nothing."""
    from lseg_ros.model.checkpoint import CheckpointError, load_strict

    try:
        load_strict(module, sd, path, what)
    except CheckpointError as e:
        raise ToolError(str(e)) from None


def load_backbone_weights(net, path: Path) -> None:
    """ImageNet weights for a config-built network: a timm ViT state dict (for ``pretrained.model``)
    or a torchvision ResNet one (repackaged as in docs/model.md §1.7). The classifier head is dropped."""
    sd = _read_state_dict(path)
    if net.config.backbone == "vit":
        target = net.pretrained.model
        keep = set(target.state_dict())
        sd = {k: v for k, v in sd.items() if k in keep or not k.startswith("head")}
        _load_into(target, sd, "ViT backbone", path)
    else:
        mapped = {}
        for k, v in sd.items():
            if k.startswith("fc."):
                continue
            for old, new in (("conv1.", "layer1.0."), ("bn1.", "layer1.1."), ("layer1.", "layer1.4.")):
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            mapped[k] = v
        _load_into(net.pretrained, mapped, "ResNet backbone", path)
    log.info("backbone initialised from %s", path)


_TEXT_PREFIXES = ("net.clip_pretrained.", "clip_pretrained.", "text.tower.")


def load_text_weights(net, path: Path) -> None:
    """CLIP ViT-B/32 weights (OpenAI / open_clip ``ViT-B-32-quickgelu`` names) for the text tower;
    from a whole LSeg checkpoint (released .ckpt, own file) only its CLIP part is taken."""
    sd = _read_state_dict(path)
    for prefix in _TEXT_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    sd = {k: v.float() for k, v in sd.items() if not k.startswith("visual.") and k != "logit_scale"}
    _load_into(net.text.tower, sd, "CLIP text tower", path)
    log.info("text tower initialised from %s", path)


def build_model(args) -> torch.nn.Module:
    if args.weights is None and args.config is None:
        raise ToolError("give --weights (released .ckpt or own .safetensors) or --config NAME")
    if args.weights is None:
        torch.manual_seed(args.seed)       # reproducible random init
    net = load_net(args.weights, args.config, "cpu")
    if args.backbone_weights:
        load_backbone_weights(net, args.backbone_weights)
    if args.text_weights:
        load_text_weights(net, args.text_weights)
    if args.weights is None and not args.text_weights:
        log.warning("the text tower is random: labels carry no language meaning (give --text-weights "
                    "with CLIP ViT-B/32 weights, or start from a released checkpoint)")
    net.untrained = False
    return net


def param_groups(net, lr: float, head_mult: float) -> list[dict]:
    """Backbone (``pretrained.*``) at lr, decoder/head (``scratch.*``) at lr·head_mult; text frozen."""
    back, head, other = [], [], []
    for name, p in net.named_parameters():
        if name.startswith("text."):
            p.requires_grad_(False)
            continue
        if not p.requires_grad:
            continue
        (back if name.startswith("pretrained.") else head if name.startswith("scratch.") else other).append(p)
    if other:
        log.warning("%d trainable parameters outside pretrained/scratch: trained at the backbone rate", len(other))
    return [{"params": back + other, "lr": lr, "name": "pretrained"},
            {"params": head, "lr": lr * head_mult, "name": "scratch"}]
