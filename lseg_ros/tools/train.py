"""``lseg-train``: fine-tune LSeg's image encoder with the text encoder frozen (docs/model.md §4.1).

* Loss: pixel-wise ``CrossEntropyLoss(ignore_index)`` over the label-similarity logits
  (scaled cosine similarities, temperature fixed at 1/0.07).
* Text: the class names are encoded once by the frozen CLIP text tower; never trained.
* Optimiser: SGD, momentum 0.9, weight decay 1e-4; lr = base_lr/16·batch for ``pretrained``
  (backbone + reassemble), 10× for ``scratch`` (decoder + head). Poly schedule
  (1 − it/max_it)^0.9. Deviation: stepped per iteration, not per epoch as the reference's
  LambdaLR, so short runs also decay smoothly.
* Augmentation: see ``data.TrainTransform`` (flip, random scale, pad, crop).
* Mixed precision (``--amp fp16|bf16``) only on CUDA, with a GradScaler for fp16. Off by
  default: the reference trained in fp32 (its comment: AMP gave NaNs).
* Zero-shot mode (``--zero-shot``): every sample asks about one class c present in it; text
  ['others', c], 2-way CE, foreground = 1 (docs/model.md §1.8, §4.1).

Outputs in ``--output``: ``last.safetensors`` / ``best.safetensors`` (the project's own
format), ``last.state.pt`` (optimiser, scheduler, epoch, iteration, history, RNG; for
``--resume``), ``history.json`` and ``curves.png``. Determinism: data order and augmentation
are functions of (seed, epoch, index), so a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from lseg_ros.model.variants import NAMES
from lseg_ros.tools import folds
from lseg_ros.tools.common import ToolError, cli, progress
from lseg_ros.tools.data import FolderDataset, TrainTransform, ValTransform, read_class_names
from lseg_ros.tools.metrics import ConfusionMatrix
from lseg_ros.tools.train_setup import (
    _TorchData, build_model, folder_items, param_groups, zero_shot_items_fold, zero_shot_items_folder)

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class TrainOptions:
    """What a run depends on; stored in the state file and checked on resume."""

    epochs: int = 10
    batch_size: int = 4
    base_lr: float = 0.004
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    crop_size: int = 480
    ignore_index: int = 255
    seed: int = 0
    amp: str = "off"
    zero_shot: bool = False
    class_names: list = field(default_factory=list)


# ---- the loop -----------------------------------------------------------------------------
class Trainer:
    def __init__(self, net, train_data, opts: TrainOptions, output: Path, device: str = "cpu",
                 val_data=None, workers: int = 0, inputs: dict | None = None) -> None:
        from lseg_ros.model.text import encode_label_set

        self.net, self.opts, self.output = net, opts, Path(output)
        self.device = torch.device(device)
        self.train_data, self.val_data, self.workers = train_data, val_data, workers
        self.inputs = dict(inputs or {})   # data paths, remembered for --resume
        if opts.amp != "off" and self.device.type != "cuda":
            raise ToolError(f"--amp {opts.amp} needs a CUDA device (got {device})")
        # Encode the label texts once (frozen text encoder); "a|b" alternatives are averaged.
        texts = list(opts.class_names)
        if opts.zero_shot:
            texts = ["others"] + texts
        self.net.to(self.device)
        with torch.no_grad():
            self.text = encode_label_set(net.text, texts).embeddings.to(self.device)
        lr = opts.base_lr / 16 * opts.batch_size
        self.optimizer = torch.optim.SGD(param_groups(net, lr, opts.head_lr_mult), lr=lr,
                                         momentum=opts.momentum, weight_decay=opts.weight_decay)
        self.iters_per_epoch = math.ceil(len(train_data) / opts.batch_size)
        self.max_iters = self.iters_per_epoch * opts.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: max(0.0, 1 - it / self.max_iters) ** opts.poly_power)
        self.scaler = torch.amp.GradScaler("cuda", enabled=opts.amp == "fp16")
        self.criterion = torch.nn.CrossEntropyLoss(ignore_index=opts.ignore_index)
        self.epoch = 0          # completed epochs
        self.iteration = 0
        self.history: list[dict] = []
        self.best = -math.inf

    # -- state -----------------------------------------------------------------------------
    def save(self, improved: bool) -> None:
        from lseg_ros.model import save_own

        self.output.mkdir(parents=True, exist_ok=True)
        save_own(self.net, self.output / "last.safetensors")
        if improved:
            save_own(self.net, self.output / "best.safetensors")
        state = {"version": STATE_VERSION, "options": asdict(self.opts), "epoch": self.epoch,
                 "iteration": self.iteration, "best": self.best, "history": json.dumps(self.history),
                 "inputs": json.dumps(self.inputs),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state()}
        tmp = self.output / "last.state.pt.part"
        torch.save(state, tmp)
        os.replace(tmp, self.output / "last.state.pt")   # the weights and state move together
        (self.output / "history.json").write_text(json.dumps(self.history, indent=1))
        plot_curves(self.history, self.output / "curves.png")

    def resume(self, state_path: Path, load_weights: bool = True) -> None:
        """Continue from a run folder (or its last.state.pt). ``load_weights=False`` when the
        network was already built from that run's last.safetensors (as the CLI does)."""
        from lseg_ros.model import CheckpointError, LSegNet

        state_path = Path(state_path)
        if state_path.is_dir():
            state_path = state_path / "last.state.pt"
        weights = state_path.with_name("last.safetensors")
        if not state_path.is_file() or not weights.is_file():
            raise ToolError(f"{state_path}: no training state to resume (needs last.state.pt and "
                            "last.safetensors from an earlier run)")
        state = read_state(state_path)
        saved, now = state["options"], asdict(self.opts)
        differ = {k: (saved.get(k), v) for k, v in now.items() if k != "epochs" and saved.get(k) != v}
        if differ:
            raise ToolError(f"{state_path}: cannot resume with changed options {differ}")
        if saved["epochs"] != now["epochs"]:
            raise ToolError(f"{state_path}: the run was planned for {saved['epochs']} epochs (the poly "
                            f"schedule depends on it); resume with --epochs {saved['epochs']}")
        try:
            if load_weights:
                self.net.load_state_dict(LSegNet.from_checkpoint(weights).state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
            self.best, self.history = float(state["best"]), json.loads(state["history"])
        except CheckpointError as e:
            raise ToolError(str(e)) from None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ToolError(f"{state_path}: damaged training state ({type(e).__name__}: {e})") from None
        log.info("resumed from %s: epoch %d, iteration %d", state_path, self.epoch, self.iteration)

    # -- steps -----------------------------------------------------------------------------
    def _autocast(self):
        if self.opts.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.opts.amp == "fp16" else torch.bfloat16)

    def _logits(self, x, cls):
        if self.opts.zero_shot:
            # per sample exactly the labels ['others', c] (docs/model.md §1.8): a (B, 2, D) text batch, so a
            # spatial block (which mixes labels) sees what the reference's forward would.
            idx = torch.stack([torch.zeros_like(cls), cls + 1], 1).to(self.text.device)
            return self.net(x, self.text[idx])
        return self.net(x, self.text)

    def _num_classes(self) -> int:
        return 2 if self.opts.zero_shot else len(self.opts.class_names)

    def _loader(self, data, shuffle: bool, epoch: int):
        g = torch.Generator().manual_seed(self.opts.seed * 100003 + epoch)
        if hasattr(data.transform, "epoch"):
            data.transform.epoch = epoch
        return torch.utils.data.DataLoader(data, batch_size=self.opts.batch_size, shuffle=shuffle, generator=g,
                                           num_workers=self.workers, drop_last=False)

    def train_epoch(self) -> dict:
        self.net.train()
        cm = ConfusionMatrix(self._num_classes(), self.opts.ignore_index)
        losses = []
        loader = self._loader(self.train_data, True, self.epoch)
        bar = progress(loader, total=len(loader), desc=f"epoch {self.epoch + 1}/{self.opts.epochs}", unit="it")
        for x, y, cls in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._autocast():
                logits = self._logits(x, cls)
            loss = self.criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise ToolError(f"loss is {loss.item()} at iteration {self.iteration}: lower --base-lr "
                                "or turn --amp off")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.iteration += 1
            losses.append(loss.item())
            cm.update(logits.argmax(1).cpu().numpy(), y.cpu().numpy(), "training batch")
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        return {"loss": float(np.mean(losses)), "train_miou": cm.miou(), "train_pixel_accuracy": cm.pixel_accuracy()}

    @torch.no_grad()
    def validate(self) -> dict:
        self.net.eval()
        cm = ConfusionMatrix(self._num_classes(), self.opts.ignore_index)
        for x, y, cls in self._loader(self.val_data, False, 0):
            with self._autocast():
                logits = self._logits(x.to(self.device), cls)
            cm.update(logits.argmax(1).cpu().numpy(), y.numpy(), "validation batch")
        return {"val_miou": cm.miou(), "val_pixel_accuracy": cm.pixel_accuracy()}

    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train up to ``opts.epochs`` (or ``stop_after`` more epochs), saving after each."""
        done = 0
        while self.epoch < self.opts.epochs and (stop_after is None or done < stop_after):
            t0 = time.monotonic()
            row = {"epoch": self.epoch + 1, **self.train_epoch()}
            if self.val_data is not None:
                row.update(self.validate())
            self.epoch += 1
            row.update(iteration=self.iteration, seconds=round(time.monotonic() - t0, 2))
            self.history.append(row)
            score = row.get("val_miou", row["train_miou"])
            improved = not math.isnan(score) and score > self.best
            if improved:
                self.best = score
            self.save(improved)
            log.info("epoch %d: %s", self.epoch, {k: round(v, 4) if isinstance(v, float) else v
                                                  for k, v in row.items()})
            done += 1
        return self.history


def plot_curves(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    a.plot(ep, [h["loss"] for h in history], "o-")
    a.set_xlabel("epoch"), a.set_ylabel("training loss"), a.grid(alpha=0.3)
    b.plot(ep, [h["train_miou"] for h in history], "o-", label="train")
    if any("val_miou" in h for h in history):
        b.plot(ep, [h.get("val_miou", float("nan")) for h in history], "s-", label="val")
    b.set_xlabel("epoch"), b.set_ylabel("mIoU"), b.set_ylim(0, 1), b.grid(alpha=0.3), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# ---- CLI ----------------------------------------------------------------------------------
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
               "      --weights fss_rn101.ckpt -o runs/zs0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="training data: folder dataset (images/, masks/, classes.*) "
                                             "or, with --benchmark, the HSNet data root")
    p.add_argument("--val-data", type=Path, help="validation folder dataset (same classes)")
    p.add_argument("--classes", type=Path, help="class-name file overriding DATA/classes.*")
    p.add_argument("-o", "--output", type=Path, help="run folder (checkpoints, history, curves)")
    p.add_argument("--resume", type=Path, help="run folder or last.state.pt to continue")
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
    g.add_argument("--batch-size", type=int, default=4, help="the reference's commented-out variant uses 4")
    g.add_argument("--base-lr", type=float, default=0.004, help="lr = base_lr/16*batch; head x10")
    g.add_argument("--head-lr-mult", type=float, default=10.0)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--crop-size", type=int, default=480, help="multiple of 32")
    g.add_argument("--ignore-index", type=int, default=255)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--amp", choices=("off", "fp16", "bf16"), default="off", help="mixed precision (CUDA only)")
    g.add_argument("--device", default=None, help="cpu (default) or cuda[:N]; a resumed run keeps its own")
    g.add_argument("--workers", type=int, default=0, help="data-loading processes")
    g.add_argument("--skip-bad", action="store_true", help="skip (and count) unreadable or mismatched samples")
    g = p.add_argument_group("zero-shot (2-way 'others' vs class)")
    g.add_argument("--zero-shot", action="store_true")
    g.add_argument("--benchmark", choices=("pascal", "coco"), help="train on this benchmark's fold split")
    g.add_argument("--fold", type=int, default=None, help="0..3 (default 0)")
    g.add_argument("--splits", type=Path, help="HSNet data/splits folder")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


_PATH_INPUTS = ("data", "val_data", "classes", "splits")
_INPUTS = _PATH_INPUTS + ("benchmark", "fold", "device")


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


def _resolve_resume(args) -> None:
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
            setattr(args, k, Path(v) if k in _PATH_INPUTS else v)
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


@cli
def _run(args) -> int:
    if args.resume:
        _resolve_resume(args)
    if args.output is None:
        raise ToolError("give -o/--output RUN_FOLDER")
    if args.data is None:
        raise ToolError("give --data")
    args.device = args.device or "cpu"
    if args.crop_size % 32:
        raise ToolError(f"--crop-size must be a multiple of 32, got {args.crop_size}")
    if args.benchmark and not args.zero_shot:
        raise ToolError("--benchmark trains the zero-shot fold protocol: add --zero-shot")
    net = build_model(args)
    mean, std = net.config.mean, net.config.std
    transform = TrainTransform(args.crop_size, args.ignore_index, seed=args.seed)
    if args.benchmark:
        if args.splits is None:
            raise ToolError("--benchmark needs --splits (HSNet data/splits)")
        names = list(folds.class_names(args.benchmark))
        items, loader = zero_shot_items_fold(args.benchmark, args.fold or 0, args.data, args.splits,
                                             args.ignore_index)
    else:
        ds = FolderDataset(args.data, read_class_names(args.classes) if args.classes else None,
                           args.ignore_index, skip_bad=args.skip_bad)
        names = ds.class_names
        items, loader = zero_shot_items_folder(ds) if args.zero_shot else folder_items(ds)
        if ds.skipped:
            print(f"skipped {len(ds.skipped)} bad sample(s) of {args.data}")
    train = _TorchData(items, loader, transform, mean, std)
    val = None
    if args.val_data:
        vds = FolderDataset(args.val_data, names if not args.benchmark else None, args.ignore_index,
                            skip_bad=args.skip_bad)
        vitems, vload = zero_shot_items_folder(vds) if args.zero_shot else folder_items(vds)
        val = _TorchData(vitems, vload, ValTransform(args.crop_size), mean, std)
    opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, base_lr=args.base_lr,
                        head_lr_mult=args.head_lr_mult, weight_decay=args.weight_decay, crop_size=args.crop_size,
                        ignore_index=args.ignore_index, seed=args.seed, amp=args.amp, zero_shot=args.zero_shot,
                        class_names=list(names))
    inputs = {k: (str(getattr(args, k)) if k in _PATH_INPUTS and getattr(args, k) is not None
                  else getattr(args, k)) for k in _INPUTS}
    trainer = Trainer(net, train, opts, args.output, args.device, val, args.workers, inputs=inputs)
    if args.resume:
        trainer.resume(args.resume, load_weights=False)   # build_model loaded its last.safetensors
    elif (args.output / "last.state.pt").exists():
        raise ToolError(f"{args.output} holds a run already: --resume {args.output}, or choose a new folder")
    trainer.fit()
    last = trainer.history[-1] if trainer.history else {}
    print(json.dumps(last))
    print(f"checkpoints in {args.output} (last.safetensors, best.safetensors); curves: {args.output / 'curves.png'}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
