#!/usr/bin/env python3
"""CPU benchmark of the LSeg model library (not a test; prints figures).

Figures: one 480x640 frame through the Predictor for ViT-L/16 and ResNet-101 (random,
untrained weights: speed does not depend on the values), text encoding of 10 labels with
the CLIP ViT-B/32 text tower, checkpoint load time (released Lightning layout vs the
project's safetensors format) and peak resident memory.

Usage: python benchmarks/bench_model.py [--ckpt RELEASED.ckpt] [--runs 3] [--threads N]
Without --ckpt it uses the synthetic released-layout ViT-L/16 file the tests cache
($LSEG_TEST_CACHE or ~/.cache/lseg_ros_test), writing it first if needed (1.7 GB).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lseg_ros.model import LSegConfig, LSegNet, Predictor, save_own  # noqa: E402

LABELS10 = ["floor", "wall", "person", "chair", "table", "door", "window", "plant", "ceiling", "other"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def timed(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def frame_time(config: LSegConfig, runs: int) -> float:
    net = LSegNet.from_config(config)
    pred = Predictor(net, device="cpu", precision="fp32")
    labels = pred.encode_labels(["floor", "person", "other"])
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    t = timed(lambda: pred.predict(frame, labels), runs)
    del pred, net
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="a released-layout checkpoint (default: the synthetic test file)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, fp32; weights are random/untrained")
    print(f"median of {args.runs} runs after one warm-up; load average at start {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (other processes slow these figures down)\n")

    for name, cfg in [("ViT-L/16", LSegConfig.vitl16()), ("ResNet-101", LSegConfig.rn101())]:
        t = frame_time(cfg, args.runs)
        print(f"{name:11s} one 480x640 frame (Predictor.predict, 3 labels): {t:7.2f} s"
              f"   peak RSS so far {peak_rss_gb():.2f} GB")

    net = LSegNet.from_config(LSegConfig.tiny_vit(text_model="ViT-B-32-quickgelu", out_dim=512))
    t = timed(lambda: net.encode_text(LABELS10), max(args.runs, 5))
    print(f"CLIP ViT-B/32 text tower, 10 labels:                    {t * 1000:7.1f} ms")
    del net

    ckpt = args.ckpt
    if ckpt is None:
        sys.path.insert(0, str(ROOT / "test"))
        import synthetic_ckpt
        ckpt = synthetic_ckpt.released_vitl16()
    with tempfile.TemporaryDirectory() as tmp:
        own = Path(tmp) / "vitl16.safetensors"
        t0 = time.perf_counter()
        net = LSegNet.from_checkpoint(ckpt)
        t_released = time.perf_counter() - t0
        save_own(net, own)
        del net
        t0 = time.perf_counter()
        net = LSegNet.from_checkpoint(own)
        t_own = time.perf_counter() - t0
        del net
        size_released, size_own = os.path.getsize(ckpt) / 1e9, os.path.getsize(own) / 1e9
    print(f"checkpoint load, released Lightning layout ({size_released:.2f} GB): {t_released:7.2f} s")
    print(f"checkpoint load, own safetensors format   ({size_own:.2f} GB): {t_own:7.2f} s")
    print(f"(first load of a file not in the page cache is bound by disk speed)")
    print(f"peak resident memory of this process: {peak_rss_gb():.2f} GB; "
          f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
