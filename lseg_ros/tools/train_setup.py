"""``lseg-train``'s set-up: its command line, the training state file (read and checked, options taken
back by ``--resume``), its datasets as torch datasets (fixed labels and zero-shot items), the model's
initialisation (ImageNet backbone, CLIP text tower, parameter groups) and mixed precision. See train.py."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from lseg_ros.model.frames import normalize_image
from lseg_ros.model.variants import NAMES
from lseg_ros.tools import distributed, folds
from lseg_ros.tools.common import ToolError, load_net
from lseg_ros.tools.data import FolderDataset, read_pair

log = logging.getLogger(__name__)

STATE_VERSION = 1


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
    """Backbone (``pretrained.*``) at lr, decoder/head (``scratch.*``) at lr·head_mult; text frozen and
    left out. The modules the forward never runs (``LSegNet.unused_modules``) are frozen too, so DDP
    waits for no gradient of theirs; they stay in the groups (as in run states written before)."""
    unused = {id(p) for m in net.unused_modules() for p in m.parameters()}
    back, head, other = [], [], []
    for name, p in net.named_parameters():
        if name.startswith("text."):
            p.requires_grad_(False)
            continue
        if id(p) in unused:
            p.requires_grad_(False)
        elif not p.requires_grad:
            continue
        (back if name.startswith("pretrained.") else head if name.startswith("scratch.") else other).append(p)
    if other:
        log.warning("%d trainable parameters outside pretrained/scratch: trained at the backbone rate", len(other))
    return [{"params": back + other, "lr": lr, "name": "pretrained"},
            {"params": head, "lr": lr * head_mult, "name": "scratch"}]


def resolve_amp(amp: str, device: torch.device) -> str:
    """``--amp auto``: bf16 on GPUs that compute it, fp16 (with a GradScaler) on older ones, off on the
    CPU. An explicit fp16/bf16 is checked against the device."""
    if amp == "off":
        return amp
    if device.type != "cuda":
        if amp == "auto":
            return "off"
        raise ToolError(f"--amp {amp} needs a CUDA device (got {device})")
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ToolError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not compute bf16; use --amp fp16")
    return amp


# ---- command line and the state file ------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-train",
        description="Fine-tune LSeg (image encoder trained, CLIP text encoder frozen), as the reference "
                    "trains (docs/model.md §4.1).",
        epilog="examples:\n"
               "  lseg-train --data mydata/ --weights demo_e200.ckpt --epochs 20 -o runs/a\n"
               "  lseg-train --data mydata/ --config rn101 --backbone-weights resnet101.pth \\\n"
               "      --text-weights clip_vitb32.pt -o runs/b\n"
               "  lseg-train --resume runs/a            # continue where it stopped\n"
               "  lseg-train --zero-shot --benchmark pascal --fold 0 --data VOCROOT --splits hsnet/splits \\\n"
               "      --weights fss_rn101.ckpt -o runs/zs0\n"
               "  torchrun --nproc_per_node 4 -m lseg_ros.tools.train --device cuda --amp auto --grad-checkpoint \\\n"
               "      --batch-size 8 --data mydata/ --weights demo_e200.ckpt -o runs/c   # DDP, 2 samples per GPU",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="training data: folder dataset (images/, masks/, classes.*) "
                                             "or, with --benchmark, the HSNet data root")
    p.add_argument("--val-data", type=Path, help="validation folder dataset (same classes)")
    p.add_argument("--classes", type=Path, help="class-name file overriding DATA/classes.*")
    p.add_argument("-o", "--output", type=Path, help="run folder (checkpoints, history, curves)")
    p.add_argument("--resume", type=Path, help="run folder or last.state.pt to continue (any number of processes)")
    g = p.add_argument_group("initialisation")
    g.add_argument("-w", "--weights", type=Path, help="released .ckpt or own .safetensors to start from")
    g.add_argument("--config", help=f"named architecture with random init ({', '.join(NAMES)})")
    g.add_argument("--backbone-weights", type=Path, help="ImageNet backbone weights (timm ViT / torchvision ResNet)")
    g.add_argument("--text-weights", type=Path,
                   help="CLIP ViT-B/32 weights for the (frozen) text tower: a state dict (open_clip "
                        "ViT-B-32-quickgelu, safetensors or torch file; not OpenAI's TorchScript .pt) "
                        "or a released LSeg .ckpt / own .safetensors (its CLIP part)")
    g = p.add_argument_group("optimisation (lr, its split, decay, crop: the reference's defaults; epochs and "
                             "batch are for fine-tuning, the reference ran 240 epochs at batch 1x2 accumulated)")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=4,
                   help="the global batch, split over the processes (the reference's commented-out variant uses 4)")
    g.add_argument("--base-lr", type=float, default=0.004, help="lr = base_lr/16*batch; head x10")
    g.add_argument("--head-lr-mult", type=float, default=10.0)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--crop-size", type=int, default=480, help="multiple of 32")
    g.add_argument("--ignore-index", type=int, default=255)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("device and memory")
    g.add_argument("--device", default=None, help="cpu (default) or cuda (under torchrun: the GPU of each "
                                                  "process's LOCAL_RANK); a resumed run keeps its own")
    g.add_argument("--amp", choices=("off", "auto", "fp16", "bf16"), default="off",
                   help="mixed precision (CUDA only); auto: bf16 where the GPU computes it, else fp16 with a scaler")
    g.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute the ViT blocks' activations in the backward pass: less memory, one more forward "
                        "pass of the blocks")
    g.add_argument("--workers", type=int, default=0, help="data-loading processes (per training process)")
    g.add_argument("--skip-bad", action="store_true", help="skip (and count) unreadable or mismatched samples")
    distributed.add_args(g)
    g = p.add_argument_group("zero-shot (2-way 'others' vs class)")
    g.add_argument("--zero-shot", action="store_true")
    g.add_argument("--benchmark", choices=("pascal", "coco"), help="train on this benchmark's fold split")
    g.add_argument("--fold", type=int, default=None, help="0..3 (default 0)")
    g.add_argument("--splits", type=Path, help="HSNet data/splits folder")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (each iteration's loss), tracebacks")
    return p


PATH_INPUTS = ("data", "val_data", "classes", "splits")
INPUTS = PATH_INPUTS + ("benchmark", "fold", "device")
_STATE_KEYS = ("version", "options", "epoch", "iteration", "best", "history", "optimizer", "scheduler",
               "scaler", "torch_rng")


def read_state(state_path: Path) -> dict:
    """A run's last.state.pt, checked; ``ToolError`` naming the file if unreadable or damaged."""
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated/corrupt/foreign: RuntimeError, UnpicklingError, EOFError...
        raise ToolError(f"{state_path}: cannot read the training state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ToolError(f"{state_path}: not a training state (holds a {type(state).__name__})")
    if state.get("version") != STATE_VERSION:
        raise ToolError(f"{state_path}: state version {state.get('version')} != {STATE_VERSION}")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing or not isinstance(state["options"], dict):
        raise ToolError(f"{state_path}: damaged training state (missing {missing or ['options']})")
    return state


def resolve_resume(args) -> None:
    """``--resume DIR`` alone: take the options and output folder from the saved state; the
    network is built from the run's last.safetensors (once: Trainer.resume does not reload it)."""
    state_path = args.resume / "last.state.pt" if args.resume.is_dir() else args.resume
    if not state_path.is_file():
        raise ToolError(f"{state_path}: no training state to resume")
    state = read_state(state_path)
    saved = state["options"]
    args.output = args.output or state_path.parent
    for k, v in json.loads(state.get("inputs", "{}")).items():
        if getattr(args, k, None) is None and v is not None:
            setattr(args, k, Path(v) if k in PATH_INPUTS else v)
    for k in ("epochs", "batch_size", "base_lr", "head_lr_mult", "weight_decay", "crop_size",
              "ignore_index", "seed", "amp", "zero_shot"):
        if getattr(args, k) == build_parser().get_default(k) and k in saved:
            setattr(args, k, saved[k])
    for k in ("weights", "config", "backbone_weights", "text_weights"):
        if getattr(args, k) is not None:
            log.warning("--resume continues from %s: --%s ignored", state_path.with_name("last.safetensors"),
                        k.replace("_", "-"))
        setattr(args, k, None)
    args.weights = state_path.with_name("last.safetensors")
