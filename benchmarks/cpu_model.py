"""The bare model on the CPU (no ROS), three ways; random (untrained) weights, speed does not depend on them.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks cpu_model variants --model vitl16 --size 480x640 \
        --variants fp32,bf16,fp32+pack+cl,bf16+pack+cl+attn --rounds 2 [--labels 3,150] [--json [FILE]]
    .venv/bin/python -m benchmarks cpu_model load [--ckpt RELEASED.ckpt] [--runs 3]
    .venv/bin/python -m benchmarks cpu_model post [--size 480x640] [--labels 3,20,150] [--runs 5]

variants: an interleaved A/B of fast-path variants on one frame (for a shared or noisy CPU). Every
  variant is built and warmed up first (compile happens there, timed separately); then each round runs
  one frame through every variant in turn, so a load change on the machine hits all of them alike.
  Reports min and median seconds per frame (Predictor.predict), the ratio to fp32 eager of the same
  run, and the share of pixels whose label equals fp32's. `--labels 3,150` runs every variant at each
  label count in every round and also reports the time at the most labels over the time at the fewest
  (the label cost, free of the machine's drift). JSON: cpu_variants_<model>_<machine>_<date>.json.
load: checkpoint load time (a released Lightning file, by default the synthetic released-layout ViT-L/16
  file the tests cache, against the same weights in the project's safetensors format), the CLIP ViT-B/32
  text tower on 10 labels, and peak resident memory.
post: post-processing alone on random half-resolution logits: the banded path
  (postprocess.summarize_upsampled, no full-size logits) against upsampling first and summarizing
  (postprocess.summarize), and their agreement.

The benchmark command (scripts/bench.sh, benchmarks/run.py) times the same Predictor per stage over
models x sizes x labels x devices in one grid; this script is the CPU's finer tool.
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import result_path, write_json
from benchmarks.model_grid import Variant, labels_of, photo
from lseg_ros.model import LSegNet, Predictor, save_own
from lseg_ros.model.variants import NAMES, named_config


def variants(a) -> dict:
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
    if a.json is not None:
        write_json(a.json or result_path(f"cpu_variants_{a.model}"), result)
    return result


def load(a) -> None:
    net = LSegNet.from_config(named_config("tiny_vit", text_model="ViT-B-32-quickgelu", out_dim=512))
    labels = labels_of(10)
    t = _median_time(lambda: net.encode_text(labels), max(a.runs, 5))
    print(f"CLIP ViT-B/32 text tower, 10 labels: {t * 1000:7.1f} ms (median of {max(a.runs, 5)})")
    del net
    ckpt = a.ckpt
    if ckpt is None:
        import synthetic_ckpt  # test/, on the path through benchmarks.harness
        ckpt = synthetic_ckpt.released_vitl16()
    with tempfile.TemporaryDirectory() as tmp:
        own = Path(tmp) / "vitl16.safetensors"
        t0 = time.perf_counter()
        net = LSegNet.from_checkpoint(ckpt)
        t_released = time.perf_counter() - t0
        save_own(net, own)
        del net
        t0 = time.perf_counter()
        LSegNet.from_checkpoint(own)
        t_own = time.perf_counter() - t0
        size_released, size_own = os.path.getsize(ckpt) / 1e9, os.path.getsize(own) / 1e9
    print(f"checkpoint load, released Lightning layout ({size_released:.2f} GB): {t_released:7.2f} s")
    print(f"checkpoint load, own safetensors format   ({size_own:.2f} GB): {t_own:7.2f} s")
    print("(the first load of a file not in the page cache is bound by the disk)")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


def post(a) -> None:
    import torch.nn.functional as F

    from lseg_ros.model.postprocess import summarize, summarize_upsampled

    h, w = (int(v) for v in a.size.split("x"))
    print(f"{a.size}, torch threads {torch.get_num_threads()}; median of {a.runs}")
    g = torch.Generator().manual_seed(0)
    for n in (int(v) for v in a.labels.split(",")):
        low = torch.randn(n, (h + 1) // 2, (w + 1) // 2, generator=g) * 3

        def banded():
            return summarize_upsampled(low, (h, w))

        def upsample_first():
            full = F.interpolate(low[None], scale_factor=2, mode="bilinear", align_corners=True)[0, :, :h, :w]
            return summarize(full)
        res, times = {}, {}
        for name, fn in (("banded", banded), ("upsample+summarize", upsample_first)):
            res[name] = fn()
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            times[name] = statistics.median(ts)
        x, y = res["banded"], res["upsample+summarize"]
        same = (x.mask == y.mask).float().mean().item()
        print(f"{n:4d} labels: banded {1000 * times['banded']:6.0f} ms, upsample+summarize "
              f"{1000 * times['upsample+summarize']:6.0f} ms; masks equal on {100 * same:.4f}% of pixels, "
              f"confidence within {(x.confidence - y.confidence).abs().max().item():.1e}")


def _median_time(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("variants", help="interleaved A/B of fast-path variants on one frame")
    v.add_argument("--model", default="vitl16", choices=NAMES)
    v.add_argument("--size", default="480x640")
    v.add_argument("--variants", default="fp32,bf16,fp32+pack+cl,bf16+pack+cl+attn")
    v.add_argument("--labels", default="3", help="label count(s), e.g. 3 or 3,150")
    v.add_argument("--rounds", type=int, default=2)
    v.add_argument("--json", nargs="?", const="", default=None,
                   help="write the figures as JSON to this file (no value: the results folder, by the naming rule)")
    ld = sub.add_parser("load", help="checkpoint load time, text tower, peak memory")
    ld.add_argument("--ckpt", type=Path, help="a released-layout checkpoint (default: the synthetic test file)")
    ld.add_argument("--runs", type=int, default=3)
    pp = sub.add_parser("post", help="post-processing: banded against upsampling first")
    pp.add_argument("--size", default="480x640")
    pp.add_argument("--labels", default="3,20,150")
    pp.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    {"variants": variants, "load": load, "post": post}[a.what](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
