#!/usr/bin/env python3
"""Interleaved A/B of fast-path variants on one frame (for a shared or noisy CPU).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.cpu_variants --model vitl16 --size 480x640 \
        --variants fp32,bf16,fp32+pack+cl,bf16+pack+cl+attn --rounds 2

Every variant is built and warmed up first (compile happens there, timed separately); then each round
runs one frame through every variant in turn, so a load change on the machine hits all of them alike.
Reports min and median seconds per frame (Predictor.predict, 3 labels), the ratio to fp32 eager of
the same run, and the share of pixels whose label equals fp32's. Random (untrained) weights.
`--labels 3,150` runs every variant at each label count in every round and also reports the time at
the most labels over the time at the fewest, per variant (the label cost, free of the machine's drift).
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
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.model_grid import Variant, labels_of, photo  # noqa: E402
from lseg_ros.model import LSegNet, Predictor  # noqa: E402
from lseg_ros.model.variants import NAMES, named_config  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vitl16", choices=NAMES)
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--variants", default="fp32,bf16,fp32+pack+cl,bf16+pack+cl+attn")
    ap.add_argument("--labels", default="3", help="label count(s), e.g. 3 or 3,150")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))
    counts = [int(v) for v in str(a.labels).split(",")]
    variants = [Variant.parse(v) for v in a.variants.split(",")]
    if Variant("fp32") not in variants:
        variants.insert(0, Variant("fp32"))
    torch.manual_seed(0)
    base = LSegNet.from_config(named_config(a.model))
    frame = photo(h, w)
    size = (-(-h // 32) * 32, -(-w // 32) * 32)
    print(f"{a.model} (untrained) {h}x{w}, {a.labels} labels, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    preds, setup = {}, {}
    for v in variants:
        t = time.perf_counter()
        net = base if v.eager_fp32 else copy.deepcopy(base)  # converted in place (dtype, layout, packing)
        p = Predictor(net, precision=v.precision, input_size=size, **v.predictor_options())
        for n in counts:
            p.predict(frame, labels_of(n))  # warm-up (compiles; caches the label embeddings)
        setup[v.name] = time.perf_counter() - t
        preds[v.name] = p
        print(f"  {v.name}: built and warmed up in {setup[v.name]:.1f} s", flush=True)
    times = {name: [] for name in preds}
    by_count = {(name, n): [] for name in preds for n in counts}
    masks = {}
    for r in range(a.rounds):
        for name, p in preds.items():
            for n in counts:
                t = time.perf_counter()
                out = p.predict(frame, labels_of(n))
                by_count[name, n].append(time.perf_counter() - t)
                if n == counts[0]:
                    times[name].append(by_count[name, n][-1])
                    masks[name] = out.mask
        print(f"  round {r + 1}: " + ", ".join(f"{name} {n} labels {t[-1]:.2f} s" for (name, n), t in by_count.items()),
              flush=True)
    ref_min, ref_med = min(times["fp32"]), statistics.median(times["fp32"])
    result = {"model": a.model, "size": [h, w], "labels": counts, "threads": torch.get_num_threads(),
              "untrained": True, "load_average_end": os.getloadavg()[0], "variants": {}}
    for name, t in times.items():
        agree = float((masks[name] == masks["fp32"]).mean())
        result["variants"][name] = {"seconds": t, "min": min(t), "median": statistics.median(t),
                                    "ratio_min": ref_min / min(t), "ratio_median": ref_med / statistics.median(t),
                                    "mask_agreement_vs_fp32": agree, "setup_seconds": setup[name]}
        print(f"{name:16s} min {min(t):7.2f} s  median {statistics.median(t):7.2f} s  x{ref_min / min(t):.2f} "
              f"(min) x{ref_med / statistics.median(t):.2f} (median) vs fp32 eager; mask = fp32 on {agree:.4f}"
              f" ({counts[0]} labels)")
        if len(counts) > 1:
            lo, hi = counts[0], counts[-1]
            med = {n: statistics.median(by_count[name, n]) for n in counts}
            pairs = [b / x for x, b in zip(by_count[name, lo], by_count[name, hi])]
            result["variants"][name]["seconds_by_labels"] = {str(n): by_count[name, n] for n in counts}
            result["variants"][name]["labels_cost_ratio"] = {"median_of_rounds": statistics.median(pairs),
                                                             "ratio_of_medians": med[hi] / med[lo]}
            print(f"{'':16s} {hi} vs {lo} labels: x{statistics.median(pairs):.2f} (median of the rounds' "
                  f"ratios), " + ", ".join(f"{n}: {med[n]:.2f} s" for n in counts))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
