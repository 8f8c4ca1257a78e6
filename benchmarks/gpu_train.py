#!/usr/bin/env python3
"""The prepared GPU training check (no ROS, no network): ViT-L/16 training steps, with and without
activation checkpointing, and the training and evaluation tools under torchrun on CUDA.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_train.py --out "$OUT"      # device machine, sized for < 4 min on an H200
    python benchmarks/gpu_train.py --dry-run --out /tmp/dry              # CPU, tiny ViT, ~1 min (tested)
    python benchmarks/gpu_train.py --device cpu --model vitl16 --crop 96 --steps 6 --machine vm   # CPU figures

1. Steps: the network is loaded from a synthetic checkpoint in the released layout (ViT-L/16: written to
   the test cache first, ~30 s; untrained weights); coloured-shapes images (tools_synth) through the
   training pipeline (TrainTransform at --crop, SGD, poly lr; one process) with ``Trainer.step``; --amp auto (bf16 where the GPU computes it); batch --batch. Each variant (checkpointing
   off / on) runs in a process of its own, --rounds times interleaved; per variant: the loss of every
   step, the median step time after --warmup steps, peak memory (CUDA: peak allocated during the steps;
   CPU: peak resident set during the steps, and its rise over the resident set before them).
2. Tools: ``torchrun --standalone --nproc_per_node 1 -m lseg_ros.tools.train`` (NCCL on CUDA, DDP, synced
   batch norm, --amp auto --grad-checkpoint, one epoch) on the same weights, then ``lseg-evaluate`` on
   the result under torchrun; exit status and the recorded world_size. --skip-tools leaves it out.
Output: gpu_train_<model>_<machine>_<date>.json and .txt in --out (rewritten after each part).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.harness import ROOT, stamp as now_stamp  # noqa: E402  (puts test/ on the path: synthetic_ckpt)

IMAGES = 16            # synthetic training images (4 in a dry run)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def one_variant(a) -> dict:
    """Child process: build the trainer, run the steps, return the figures."""
    from lseg_ros.model import LSegConfig, LSegNet
    from lseg_ros.tools.data import FolderDataset, TrainTransform
    from lseg_ros.tools.distributed import Ranks
    from lseg_ros.tools.train import Trainer, TrainOptions
    from lseg_ros.tools.train_setup import _TorchData, folder_items

    dev = torch.device(a.device)
    tiny = {"tiny_vit": LSegConfig.tiny_vit, "tiny_resnet": LSegConfig.tiny_resnet}.get(a.model)
    net = LSegNet.from_checkpoint(a.weights, config=tiny() if tiny else None)
    if a.one == "checkpoint":
        net.pretrained.set_grad_checkpointing()
    ds = FolderDataset(a.data)
    items, load = folder_items(ds)
    data = _TorchData(items, load, TrainTransform(a.crop, seed=0), net.config.mean, net.config.std)
    per_epoch = -(-len(data) // a.batch)
    opts = TrainOptions(epochs=a.steps // per_epoch + 1, batch_size=a.batch, crop_size=a.crop,
                        amp=a.amp, class_names=ds.class_names)
    tr = Trainer(net, data, opts, a.data.parent / "unused", ranks=Ranks(device=dev))    # saves nothing here
    net.train()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")      # resets the peak resident set (VmHWM)
        before = _rss_kb("VmRSS") * 1024
    losses, times, epoch = [], [], 0
    while len(losses) < a.steps:
        for x, y, cls in tr._loader(data, True, epoch):
            t = time.perf_counter()
            loss, _ = tr.step(x, y, cls)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            losses.append(loss)
            if len(losses) == a.steps:
                break
        epoch += 1
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _rss_kb("VmHWM") * 1024
    timed = times[a.warmup:] or times
    return {"variant": a.one, "amp": opts.amp, "losses": losses, "step_s": times,
            "median_step_s": statistics.median(timed), "before_steps_mb": before / 2**20, "peak_mb": peak / 2**20,
            "peak_over_before_mb": (peak - before) / 2**20, "memory": "cuda allocated" if dev.type == "cuda" else "rss"}


class Report:
    def __init__(self, out: Path, name: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.base, self.lines, self.data = out / name, [], {}

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)
        self.base.with_suffix(".txt").write_text("\n".join(self.lines) + "\n")
        self.base.with_suffix(".json").write_text(json.dumps(self.data, indent=1))


def _child_env() -> dict:
    """This environment with the repository first on PYTHONPATH (what is already there, e.g. carried
    wheels on a GPU machine, stays)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def run_child(a, variant: str, weights: Path, data: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.gpu_train", "--one", variant, "--weights", str(weights), "--data", str(data),
           "--device", a.device, "--model", a.model, "--crop", str(a.crop), "--batch", str(a.batch),
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--amp", a.amp]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_child_env())
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_tools(a, rep: Report, weights: Path, data: Path, work: Path) -> None:
    """lseg-train and lseg-evaluate under torchrun, one process (NCCL on CUDA)."""
    model = ["--config", a.model] if a.model.startswith("tiny") else ["--weights", str(weights)]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"]
    env = _child_env()
    steps = [("train", launch + ["lseg_ros.tools.train", "--data", str(data), *model, "--device", a.device,
                                 "--amp", "auto", "--crop-size", str(a.crop), "--batch-size", str(a.batch),
                                 "--epochs", "1", "-o", str(work / "run")]
              + (["--grad-checkpoint"] if a.model != "tiny_resnet" else [])),
             ("evaluate", launch + ["lseg_ros.tools.evaluate", "--data", str(data), "-w",
                                    str(work / "run" / "last.safetensors"), "--device", a.device,
                                    "-o", str(work / "eval")])]
    rep.data["tools"] = {}
    for name, cmd in steps:
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        result = work / ("run/history.json" if name == "train" else "eval/results.json")
        record = json.loads(result.read_text()) if proc.returncode == 0 and result.exists() else None
        if isinstance(record, list):
            record = record[-1]
        rep.data["tools"][name] = {"rc": proc.returncode, "wall_s": wall, "record": record,
                                   "tail": (proc.stdout + proc.stderr)[-3000:]}
        state = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        world = record.get("world_size") if record else None
        rep.line(f"  torchrun {name}: {state} in {wall:.0f} s, world_size {world}"
                 + (f", loss {record['loss']:.4f}" if record and "loss" in record else ""))
        if proc.returncode:
            rep.line("    " + "\n    ".join((proc.stdout + proc.stderr)[-1500:].splitlines()))
            break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "results")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny ViT, 64 crop, 4 steps: checks the script")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    ap.add_argument("--model", default=None, choices=("vitl16", "tiny_vit", "tiny_resnet"))
    ap.add_argument("--crop", type=int, default=None, help="default 480 (64 dry)")
    ap.add_argument("--batch", type=int, default=2, help="samples per step (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="steps per variant (default 30; 4 dry)")
    ap.add_argument("--warmup", type=int, default=None, help="first steps left out of the median (default 3; 1 dry)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the variants")
    ap.add_argument("--amp", default="auto", choices=("off", "auto", "fp16", "bf16"))
    ap.add_argument("--machine", default=None, help="name in the output file (default: the GPU, or cpu)")
    ap.add_argument("--skip-tools", action="store_true", help="leave out part 2 (the tools under torchrun)")
    ap.add_argument("--one", help=argparse.SUPPRESS)              # child: run one variant, print JSON
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    dry = a.dry_run
    a.device = a.device or ("cpu" if dry else "cuda")
    a.model = a.model or ("tiny_vit" if dry else "vitl16")
    a.crop, a.steps = a.crop or (64 if dry else 480), a.steps or (4 if dry else 30)
    a.warmup = a.warmup if a.warmup is not None else (1 if dry else 3)
    if a.one:
        print(json.dumps(one_variant(a)))
        return 0
    if a.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run (or --device cpu)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    machine = a.machine or (torch.cuda.get_device_name().replace(" ", "-") if a.device == "cuda" else "cpu")
    rep = Report(a.out, f"gpu_train_{'dry-run_' if dry else ''}{a.model}_{machine}_{now_stamp()}")
    variants = ["plain", "checkpoint"] if a.model != "tiny_resnet" else ["plain"]
    rep.data["env"] = {"torch": torch.__version__, "device": a.device, "machine": machine, "dry_run": dry,
                       "model": a.model, "crop": a.crop, "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
                       "rounds": a.rounds, "amp": a.amp, "untrained": True,
                       "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
    rep.line(f"# benchmarks/gpu_train.py on {machine}, {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}: "
             f"{a.model} (synthetic released-layout weights, untrained), crop {a.crop}, batch {a.batch}, "
             f"{a.steps} steps, amp {a.amp}" + (" -- DRY RUN (not figures)" if dry else ""))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        import synthetic_ckpt
        from tools_synth import make_shapes

        if a.model == "vitl16":
            t = time.perf_counter()
            weights = synthetic_ckpt.released_vitl16()
            rep.line(f"synthetic ViT-L/16 checkpoint ready in {time.perf_counter() - t:.0f} s: {weights}")
        else:
            from lseg_ros.model import LSegConfig, LSegNet

            torch.manual_seed(0)
            config = LSegConfig.tiny_vit() if a.model == "tiny_vit" else LSegConfig.tiny_resnet()
            weights = synthetic_ckpt.released_from_net(LSegNet.from_config(config), work / "tiny.ckpt")
        data = make_shapes(work / "shapes", 4 if dry else IMAGES, size=max(64, a.crop * 520 // 480))
        rep.data["steps"] = []
        rep.line("1. training steps (median after warm-up; memory: peak during the steps, and its rise over before)")
        for r in range(a.rounds):
            for variant in variants:
                res = run_child(a, variant, weights, data)
                res["round"] = r
                rep.data["steps"].append(res)
                rep.line(f"  {variant:<10} round {r}: {res['median_step_s'] * 1e3:8.1f} ms/step, peak "
                         f"{res['peak_mb']:8.1f} MiB {res['memory']} (+{res['peak_over_before_mb']:.1f} over "
                         f"{res['before_steps_mb']:.1f}), amp {res['amp']}, loss "
                         + " ".join(f"{v:.3f}" for v in res["losses"]))
        if not a.skip_tools:
            rep.line("2. the tools under torchrun, one process")
            run_tools(a, rep, weights, data, work)
    rep.data["wall_seconds"] = time.monotonic() - t0
    rep.line(f"done in {rep.data['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
