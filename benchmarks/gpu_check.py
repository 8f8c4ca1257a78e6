#!/usr/bin/env python3
"""GPU check of the model library (not a test; prints figures). Needs a CUDA machine.

1. Fidelity on CUDA: the reference logits (test/data/lseg-reference) through from_checkpoint on
   the synthetic released-layout ViT-L/16 checkpoint, in fp32 and under fp16/bf16 autocast
   (max |diff| and argmax agreement against the recorded fp32 logits).
2. Speed: one 480x640 frame through the Predictor (upload, pad, forward, softmax, per-class
   scores, download) for ViT-L/16 and ResNet-101 in fp32/fp16/bf16; text encoding of 10 labels;
   peak GPU memory. Weights are the synthetic ones (speed does not depend on their values).

Usage: PYTHONPATH=.:test python benchmarks/gpu_check.py [--runs 20]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import synthetic_ckpt  # noqa: E402
from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402

LABELS10 = ["floor", "wall", "person", "chair", "table", "door", "window", "plant", "ceiling", "other"]


def cuda_time(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fidelity(net: LSegNet) -> None:
    data = synthetic_ckpt.DATA
    meta = json.loads((data / "golden_vitl16.json").read_text())
    g = np.load(data / "golden_vitl16.npz")
    for x_key, lab, out_key in (("XA", "L1", "vitl16_a0/A_L1"), ("XB", "L2", "vitl16_a0/B_L2")):
        x = torch.from_numpy(g[x_key]).cuda()
        ref = torch.from_numpy(g[out_key]).cuda()
        with torch.inference_mode():
            text = net.encode_text(meta["labels"][lab])
            print(f"  text {lab}: max |diff| vs recorded = {(text - torch.from_numpy(g['text/' + lab]).cuda()).abs().max():.2e}")
            for prec in ("fp32", "fp16", "bf16"):
                ctx = torch.autocast("cuda", dtype=torch.float16 if prec == "fp16" else torch.bfloat16,
                                     enabled=prec != "fp32")
                with ctx:
                    out = net(x, text).float()
                diff = (out - ref).abs().max().item()
                agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
                print(f"  {out_key} {prec}: max |diff| = {diff:.2e} (tolerance {meta['atol']}), "
                      f"argmax agreement {agree:.4f}")


def speed(name: str, net: LSegNet, runs: int) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    results = {}
    for prec in ("fp32", "fp16", "bf16"):
        pred = Predictor(net if prec == "fp32" else copy.deepcopy(net), device="cuda", precision=prec)
        labels = pred.encode_labels(["floor", "person", "table", "other"])
        torch.cuda.reset_peak_memory_stats()
        t = cuda_time(lambda: pred.predict(frame, labels), runs)
        results[prec] = t
        print(f"  {name} 480x640 {prec}: {t * 1e3:7.1f} ms/frame ({1 / t:5.1f} fps), "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"  {name} speed-up vs fp32 (same run): fp16 x{results['fp32'] / results['fp16']:.2f}, "
          f"bf16 x{results['fp32'] / results['bf16']:.2f}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)

    t = time.perf_counter()
    ckpt = synthetic_ckpt.released_vitl16()
    print(f"synthetic released ViT-L/16 checkpoint ready in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    net = LSegNet.from_checkpoint(ckpt, device="cuda")
    torch.cuda.synchronize()
    print(f"from_checkpoint(released layout, cuda): {time.perf_counter() - t:.1f} s", flush=True)

    print("fidelity (reference logits on CUDA):", flush=True)
    fidelity(net)

    t_text = cuda_time(lambda: net.encode_text(LABELS10), args.runs)
    print(f"text encoding, 10 labels: {t_text * 1e3:.1f} ms", flush=True)
    print("speed:", flush=True)
    speed("ViT-L/16", net, args.runs)
    del net
    torch.cuda.empty_cache()
    speed("ResNet-101", LSegNet.from_config(LSegConfig.rn101(), device="cuda"), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
