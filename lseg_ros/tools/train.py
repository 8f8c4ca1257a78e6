"""``lseg-train``: fine-tune LSeg's image encoder with the text encoder frozen (docs/model.md §4.1).

* Loss: pixel-wise ``CrossEntropyLoss(ignore_index)`` over the label-similarity logits
  (scaled cosine similarities, temperature fixed at 1/0.07).
* Text: the class names are encoded once by the frozen CLIP text tower; never trained.
* Optimiser: SGD, momentum 0.9, weight decay 1e-4; lr = base_lr/16·batch for ``pretrained``
  (backbone + reassemble), 10× for ``scratch`` (decoder + head). Poly schedule
  (1 − it/max_it)^0.9. Deviation: stepped per iteration, not per epoch as the reference's
  LambdaLR, so short runs also decay smoothly.
* Augmentation: see ``data.TrainTransform`` (flip, random scale, pad, crop).
* Mixed precision (``--amp fp16|bf16|auto``) only on CUDA, with a GradScaler for fp16; ``auto`` is
  bf16 where the GPU computes it. Off by default: the reference trained in fp32 (its comment: AMP
  gave NaNs). ``--grad-checkpoint`` recomputes the ViT blocks' activations in the backward pass.
* Several processes (``torchrun``, see distributed.py): DDP over the image path, batch norm synced
  over the global batch (as the reference trained), each rank a contiguous part of every global
  batch (``--batch-size`` is the global batch, so the lr rule does not change). The loss is the mean
  over the global batch's labelled pixels, as in one process: each rank's pixel-loss sum over the
  all-reduced pixel count, times the world size (DDP averages the gradients). Rank 0 writes.
* Zero-shot mode (``--zero-shot``): every sample asks about one class c present in it; text
  ['others', c], 2-way CE, foreground = 1 (docs/model.md §1.8, §4.1).

Outputs in ``--output``: ``last.safetensors`` / ``best.safetensors`` (the project's own
format), ``last.state.pt`` (optimiser, scheduler, epoch, iteration, history, RNG; for
``--resume``), ``history.json`` (per epoch: losses, metrics, ``world_size``, ``train_rank_samples``) and
``curves.png``. Determinism: data order and augmentation are functions of (seed, epoch, index), not of
the number of processes, so a resumed run repeats the uninterrupted one with any number of them.
"""
from __future__ import annotations

import contextlib
import functools
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
import torch.nn.functional as F

from lseg_ros.tools import distributed, folds
from lseg_ros.tools.common import ToolError, cli, progress
from lseg_ros.tools.data import FolderDataset, TrainTransform, ValTransform, read_class_names
from lseg_ros.tools.distributed import Ranks
from lseg_ros.tools.metrics import ConfusionMatrix
from lseg_ros.tools.train_setup import (
    INPUTS, PATH_INPUTS, STATE_VERSION, _TorchData, build_model, build_parser, folder_items, param_groups,
    read_state, resolve_amp, resolve_resume, zero_shot_items_fold, zero_shot_items_folder)

log = logging.getLogger(__name__)


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
    amp: str = "off"            # off, fp16, bf16; "auto" is resolved by the Trainer for its device
    zero_shot: bool = False
    class_names: list = field(default_factory=list)


# ---- the loop -----------------------------------------------------------------------------
def _collate(samples, crop: int):
    """DataLoader's own batching; a rank's empty part of a short last batch becomes an empty batch."""
    if samples:
        return torch.utils.data.default_collate(samples)
    return (torch.empty(0, 3, crop, crop), torch.empty(0, crop, crop, dtype=torch.long),
            torch.empty(0, dtype=torch.long))


class Trainer:
    """One process's training; ``ranks`` (distributed.start) makes it one of several under torchrun."""

    def __init__(self, net, train_data, opts: TrainOptions, output: Path, device: str = "cpu",
                 val_data=None, workers: int = 0, inputs: dict | None = None, ranks: Ranks | None = None) -> None:
        from lseg_ros.model.text import encode_label_set

        self.net, self.opts, self.output = net, opts, Path(output)
        self.ranks = ranks or Ranks(device=torch.device(device))
        self.device = self.ranks.device
        distributed.split_batch(opts.batch_size, self.ranks.world_size)
        self.train_data, self.val_data, self.workers = train_data, val_data, workers
        self.inputs = dict(inputs or {})   # data paths, remembered for --resume
        opts.amp = resolve_amp(opts.amp, self.device)
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
        self.model = distributed.data_parallel(net, self.ranks)      # what the training step runs
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
        """Rank 0 writes the run folder (the ranks hold the same weights)."""
        from lseg_ros.model import save_own

        if not self.ranks.main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        if improved:
            save_own(self.net, self.output / "best.safetensors")
        state = {"version": STATE_VERSION, "options": asdict(self.opts), "epoch": self.epoch,
                 "iteration": self.iteration, "best": self.best, "history": json.dumps(self.history),
                 "inputs": json.dumps(self.inputs),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state()}
        weights, tmp = self.output / "last.safetensors", self.output / "last.state.pt.part"
        save_own(self.net, weights.with_name("last.safetensors.next"))
        torch.save(state, tmp)
        # both files written first, then renamed together: an interruption leaves a consistent pair
        os.replace(weights.with_name("last.safetensors.next"), weights)
        os.replace(tmp, self.output / "last.state.pt")
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

    def _logits(self, x, cls, model=None):
        model = self.net if model is None else model
        if self.opts.zero_shot:
            # per sample exactly the labels ['others', c] (docs/model.md §1.8): a (B, 2, D) text batch, so a
            # spatial block (which mixes labels) sees what the reference's forward would.
            idx = torch.stack([torch.zeros_like(cls), cls + 1], 1).to(self.text.device)
            return model(x, self.text[idx])
        return model(x, self.text)

    def _loss(self, logits, y):
        """(what to backpropagate, the global batch's mean loss). One process: CrossEntropyLoss as the
        reference. Several: this rank's pixel-loss sum over the labelled pixels of all ranks, times the
        world size, since DDP averages the gradients of the ranks."""
        if not self.ranks.launched:
            loss = self.criterion(logits, y)
            return loss, loss.item()
        total = F.cross_entropy(logits, y, ignore_index=self.opts.ignore_index, reduction="sum")
        sums = distributed.all_sum(torch.stack([total.detach().double(),
                                                (y != self.opts.ignore_index).sum().double()]), self.ranks)
        return total * (self.ranks.world_size / sums[1]), (sums[0] / sums[1]).item()

    def _num_classes(self) -> int:
        return 2 if self.opts.zero_shot else len(self.opts.class_names)

    def _loader(self, data, shuffle: bool, epoch: int):
        """This rank's part of each global batch; the order depends on (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.opts.seed * 100003 + epoch)
        if hasattr(data.transform, "epoch"):
            data.transform.epoch = epoch
        sampler = distributed.GlobalBatchSampler(len(data), self.opts.batch_size, self.ranks, g if shuffle else None)
        return torch.utils.data.DataLoader(data, batch_sampler=sampler, generator=g, num_workers=self.workers,
                                           collate_fn=functools.partial(_collate, crop=self.opts.crop_size))

    def step(self, x, y, cls) -> tuple[float, torch.Tensor]:
        """One optimisation step on this rank's part of a global batch: (global mean loss, logits)."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self._autocast():
            logits = self._logits(x, cls, self.model)
        loss, value = self._loss(logits.float(), y)
        if not math.isfinite(value):        # the same value on every rank: all of them stop here
            raise ToolError(f"loss is {value} at iteration {self.iteration}: lower --base-lr or turn --amp off")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return value, logits

    def _reduced(self, cm: ConfusionMatrix, samples: int, prefix: str) -> dict:
        cm.matrix = distributed.all_sum(cm.matrix, self.ranks)
        return {f"{prefix}miou": cm.miou(), f"{prefix}pixel_accuracy": cm.pixel_accuracy(),
                f"{prefix}rank_samples": [int(n) for n in distributed.all_gather(samples, self.ranks)]}

    def train_epoch(self) -> dict:
        self.net.train()
        cm = ConfusionMatrix(self._num_classes(), self.opts.ignore_index)
        losses, samples = [], 0
        loader = self._loader(self.train_data, True, self.epoch)
        bar = progress(loader, total=len(loader), desc=f"epoch {self.epoch + 1}/{self.opts.epochs}", unit="it",
                       enabled=self.ranks.main)
        for x, y, cls in bar:
            value, logits = self.step(x, y, cls)
            losses.append(value)
            samples += len(x)
            cm.update(logits.argmax(1).cpu().numpy(), y.cpu().numpy(), "training batch")
            lr = self.scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}")
            log.debug("iteration %d: loss %r, lr %.6g", self.iteration, value, lr)
        return {"loss": float(np.mean(losses)), **self._reduced(cm, samples, "train_")}

    @torch.no_grad()
    def validate(self) -> dict:
        self.net.eval()
        cm = ConfusionMatrix(self._num_classes(), self.opts.ignore_index)
        samples = 0
        for x, y, cls in self._loader(self.val_data, False, 0):
            if len(x):
                with self._autocast():
                    logits = self._logits(x.to(self.device), cls)
                cm.update(logits.argmax(1).cpu().numpy(), y.numpy(), "validation batch")
                samples += len(x)
        return self._reduced(cm, samples, "val_")

    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train up to ``opts.epochs`` (or ``stop_after`` more epochs), saving after each."""
        done = 0
        while self.epoch < self.opts.epochs and (stop_after is None or done < stop_after):
            t0 = time.monotonic()
            row = {"epoch": self.epoch + 1, **self.train_epoch()}
            if self.val_data is not None:
                row.update(self.validate())
            self.epoch += 1
            row.update(iteration=self.iteration, world_size=self.ranks.world_size,
                       seconds=round(time.monotonic() - t0, 2))
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
@cli
def _run(args) -> int:
    if args.resume:
        resolve_resume(args)
    if args.output is None:
        raise ToolError("give -o/--output RUN_FOLDER")
    if args.data is None:
        raise ToolError("give --data")
    args.device = args.device or "cpu"
    if args.crop_size % 32:
        raise ToolError(f"--crop-size must be a multiple of 32, got {args.crop_size}")
    if args.benchmark and not args.zero_shot:
        raise ToolError("--benchmark trains the zero-shot fold protocol: add --zero-shot")
    distributed.split_batch(args.batch_size, distributed.world_size())
    with distributed.session(args.device, args.dist_timeout) as ranks:
        return _train(args, ranks)


def _train(args, ranks: Ranks) -> int:
    net = build_model(args)
    if args.grad_checkpoint:
        if net.config.backbone != "vit":
            raise ToolError("--grad-checkpoint recomputes the ViT blocks; the ResNet backbone has none (a second "
                            "run of its batch norm would count the statistics twice)")
        net.pretrained.set_grad_checkpointing()
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
    inputs = {k: (str(getattr(args, k)) if k in PATH_INPUTS and getattr(args, k) is not None
                  else getattr(args, k)) for k in INPUTS}
    trainer = Trainer(net, train, opts, args.output, val_data=val, workers=args.workers, inputs=inputs, ranks=ranks)
    if args.resume:
        trainer.resume(args.resume, load_weights=False)   # build_model loaded its last.safetensors
    elif (args.output / "last.state.pt").exists():
        raise ToolError(f"{args.output} holds a run already: --resume {args.output}, or choose a new folder")
    trainer.fit()
    if ranks.main:
        print(json.dumps(trainer.history[-1] if trainer.history else {}))
        print(f"checkpoints in {args.output} (last.safetensors, best.safetensors); curves: {args.output / 'curves.png'}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
