#!/usr/bin/env python3
"""ONNX Runtime's CPU provider against the torch CPU paths, interleaved, on one frame (docs/deployment.md).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.onnx_cpu --model vitl16 --size 480x640 --rounds 6 \
        --json benchmarks/results/onnx_cpu_vitl16_vm_<date>.json
    .venv/bin/python -m benchmarks.onnx_cpu --model rn101 --memory --json ...   # peak RSS per backend, one process each

Weights: the synthetic released-layout checkpoint of test/synthetic_ckpt.py (made on first use, cached;
untrained: speed does not depend on the values, agreement on them is a lower bound). The image path is
exported with lseg_ros.model.export (fp32 weights, the input size fixed; the write-time check's figures
are recorded), then three Predictors run the same frame in turn every round, so load changes on a shared
machine hit all of them alike: `torch fp32` (precision fp32: the exact path, prepacked linears,
channels-last), `torch auto` (the CPU default: bf16 here with the attention kernel), `onnxruntime`
(CPU provider, the same thread count, no spinning). Reported: min and median seconds per frame
(Predictor.predict, 3 labels) and the CPU seconds the process spent on it (all threads: on a shared
machine a steadier measure of the work than wall time, which includes waiting for a core), ratios to
torch fp32 and to torch auto, and mask agreement with torch fp32 (3 labels and the exporter's 20 check labels).

--memory: each backend in its own process (`--child`): RSS after the Predictor is built and the peak
RSS over one frame (VmHWM reset after building), at each --sizes (onnxruntime at --size only).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.model_grid import labels_of, photo  # noqa: E402
from lseg_ros.model import LSegNet, Predictor  # noqa: E402
from lseg_ros.model.export import CHECK_LABELS, ExportOptions, export_image_path  # noqa: E402
from lseg_ros.model.onnx_runtime import OnnxOptions  # noqa: E402

BACKENDS = ("torch fp32", "torch auto", "onnxruntime")


def weights_for(model: str) -> Path:
    import synthetic_ckpt
    return {"vitl16": synthetic_ckpt.released_vitl16, "rn101": synthetic_ckpt.released_rn101}[model]()


def build(backend: str, weights: Path, size, onnx_path: str | None, threads: int) -> Predictor:
    net = LSegNet.from_checkpoint(weights)
    if backend == "onnxruntime":
        return Predictor(net, input_size=size, onnx=OnnxOptions(onnx_path, providers=("cpu",), threads=threads))
    return Predictor(net, precision="fp32" if backend == "torch fp32" else "auto", input_size=size)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def child(a) -> int:
    """One backend in this process: RSS after building, peak RSS over one frame (GiB), frame seconds."""
    size = tuple(int(v) for v in a.size.split("x"))
    p = build(a.child, Path(a.weights), size, a.onnx, torch.get_num_threads())
    p.encode_labels(labels_of(3))
    built = _status_kb("VmRSS") / 2 ** 20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: the peak below is the frame's, not the checkpoint loading's
    t = time.perf_counter()
    p.predict(photo(*size), labels_of(3))
    print(json.dumps({"backend": a.child, "size": list(size), "rss_built_gib": built,
                      "peak_rss_frame_gib": _status_kb("VmHWM") / 2 ** 20, "first_frame_s": time.perf_counter() - t}))
    return 0


def export(model: str, weights: Path, size, out_dir: Path) -> dict:
    """Export into out_dir, or reuse the export there (its write-time check is in model.json)."""
    from lseg_ros.model.onnx_format import read_export_info

    path = out_dir / "model.onnx"
    if path.exists():
        info = read_export_info(path)
        if info.input_size == tuple(size) and info.source == weights.name:
            print(f"  reusing {path} (exported from {info.source} for {size[0]}x{size[1]})", flush=True)
            return {"path": str(path), "reused": True, "check": info.check, "megabytes": path.stat().st_size / 1e6}
    t = time.perf_counter()
    net = LSegNet.from_checkpoint(weights)
    r = export_image_path(net, out_dir, ExportOptions(size=size), photo(*size), source=weights.name)
    print(f"  exported {r.onnx_path} in {r.export_seconds:.0f} s (with the check {time.perf_counter() - t:.0f} s): "
          f"cosine mean {r.check['cosine_mean']:.6f} min {r.check['cosine_min']:.6f}, mask agreement "
          f"{r.check['mask_agreement']:.5f} (20 labels), max |diff| {r.check['max_abs_diff']:.2e}", flush=True)
    return {"path": r.onnx_path, "export_seconds": r.export_seconds, "check": r.check,
            "megabytes": os.path.getsize(r.onnx_path) / 1e6}


def interleaved(a, weights: Path, size, onnx_path: str) -> dict:
    frame = photo(*size)
    preds, setup = {}, {}
    for b in BACKENDS:
        t = time.perf_counter()
        preds[b] = build(b, weights, size, onnx_path, torch.get_num_threads())
        preds[b].predict(frame, labels_of(3))  # warm-up (the attention kernel's build, ORT's first run)
        setup[b] = time.perf_counter() - t
        print(f"  {b}: built and warmed up in {setup[b]:.1f} s", flush=True)
    times = {b: [] for b in BACKENDS}
    cpu = {b: [] for b in BACKENDS}  # CPU seconds of the process (all its threads) per frame
    for r in range(a.rounds):
        for b, p in preds.items():
            t, c = time.perf_counter(), time.process_time()
            p.predict(frame, labels_of(3))
            times[b].append(time.perf_counter() - t)
            cpu[b].append(time.process_time() - c)
            time.sleep(a.pause)
        print(f"  round {r + 1}: " + ", ".join(f"{b} {t[-1]:.2f} s ({cpu[b][-1]:.2f} s CPU)" for b, t in times.items()),
              flush=True)
    agreement = {}
    for n, labels in (("3", labels_of(3)), ("20", list(CHECK_LABELS))):
        ref = preds["torch fp32"].predict(frame, labels).mask
        agreement[n] = {b: 1.0 if b == "torch fp32" else float((preds[b].predict(frame, labels).mask == ref).mean())
                        for b in BACKENDS}
    med = {b: statistics.median(t) for b, t in times.items()}
    cmed = {b: statistics.median(c) for b, c in cpu.items()}
    out = {"seconds": times, "cpu_seconds": cpu, "setup_seconds": setup, "mask_agreement_vs_torch_fp32": agreement,
           "backends": {}}
    for b, t in times.items():
        out["backends"][b] = {"min": min(t), "median": med[b], "cpu_median": cmed[b],
                              "cpu_speed_vs_torch_fp32": cmed["torch fp32"] / cmed[b],
                              "cpu_speed_vs_torch_auto": cmed["torch auto"] / cmed[b],
                              "speed_vs_torch_fp32_median": med["torch fp32"] / med[b],
                              "speed_vs_torch_auto_median": med["torch auto"] / med[b],
                              "speed_vs_torch_fp32_min": min(times["torch fp32"]) / min(t),
                              "speed_vs_torch_auto_min": min(times["torch auto"]) / min(t)}
        print(f"{b:12s} min {min(t):6.2f} s  median {med[b]:6.2f} s  x{med['torch fp32'] / med[b]:.2f} of torch fp32, "
              f"x{med['torch auto'] / med[b]:.2f} of torch auto (medians); CPU time median {cmed[b]:.2f} s: "
              f"x{cmed['torch fp32'] / cmed[b]:.2f} / x{cmed['torch auto'] / cmed[b]:.2f}; masks = torch fp32 on "
              f"{agreement['3'][b]:.4f} (3 labels) / {agreement['20'][b]:.4f} (20 labels)")
    return out


def memory(a, weights: Path, onnx_path: str) -> list:
    rows = []
    runs = [(b, s) for s in a.sizes.split(",") for b in BACKENDS if b != "onnxruntime" or s == a.size]
    for backend, size in runs:
        cmd = [sys.executable, "-m", "benchmarks.onnx_cpu", "--model", a.model, "--size", size, "--child", backend,
               "--weights", str(weights), "--onnx", onnx_path or "", "--threads", str(torch.get_num_threads())]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            print(f"  {backend} {size}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {backend:12s} {size}: RSS {row['rss_built_gib']:.2f} GiB built, peak {row['peak_rss_frame_gib']:.2f} GiB "
              f"over a frame ({row['first_frame_s']:.1f} s)", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vitl16", choices=("vitl16", "rn101"))
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between two timed frames")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--onnx-dir", type=Path, default=None, help="export into this directory, or reuse the export "
                    "there if it is of this checkpoint and size (default: a temporary directory)")
    ap.add_argument("--onnx", default=None, help=argparse.SUPPRESS)  # a --child's file
    ap.add_argument("--memory", action="store_true", help="peak RSS per backend instead of the timing rounds")
    ap.add_argument("--sizes", default="240x320,480x640,720x1280", help="sizes of the --memory runs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        return child(a)
    size = tuple(int(v) for v in a.size.split("x"))
    weights = weights_for(a.model)
    print(f"{a.model} (synthetic released checkpoint, untrained) {a.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    result = {"model": a.model, "size": list(size), "threads": torch.get_num_threads(), "untrained": True,
              "load_average_start": os.getloadavg()[0], "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="lseg_onnx_") as tmp:
        result["export"] = export(a.model, weights, size, Path(a.onnx_dir or tmp))
        onnx_path = result["export"]["path"]
        import onnxruntime
        result["onnxruntime"] = onnxruntime.__version__
        if a.memory:
            result["memory"] = memory(a, weights, onnx_path)
        else:
            result.update(interleaved(a, weights, size, onnx_path))
    result["load_average_end"] = os.getloadavg()[0]
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
