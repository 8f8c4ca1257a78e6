"""One benchmark command: the bare model per stage, the label switch, and the node end to end.

    bash scripts/bench.sh [--quick] [--models vitl16,rn101] [--sizes 480x640] [--labels 3,150] ...
    (= .venv/bin/python -m benchmarks.run ...)

Prints a table and writes JSON to benchmarks/results/bench_<cpu|gpu>[_quick]_<machine>_<date>.json
($LSEG_BENCH_MACHINE names the machine). Weights are random (untrained); every figure carries its
ratio to the fp32 eager path of the same run (ratio > 1: faster). What the machine lacks (CUDA) is
skipped and said. The node part runs
benchmarks/bench_node.py (player -> lseg_node -> subscriber over DDS, node as its own process)
and merges its figures. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.model_grid import MODELS, STAGES, Variant, rss_gb, run_grid  # noqa: E402
from lseg_ros.model.devices import cpu_has_native_bf16  # noqa: E402

ROOT = harness.ROOT


def _list(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def _size(text: str):
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 240x320, 3 and 150 labels, 1 run, short node part")
    ap.add_argument("--models", type=_list(str), default=None, help="vitl16,rn101 (also tiny_vit, tiny_resnet)")
    ap.add_argument("--sizes", type=_list(_size), default=None, help="HxW list, e.g. 240x320,480x640,720x1280")
    ap.add_argument("--labels", type=_list(int), default=None, help="label counts, e.g. 3,20,150")
    ap.add_argument("--variants", type=_list(Variant.parse), default=None,
                    help="e.g. fp32,bf16,bf16+pack+cl+attn,fp16,fp16+compile+graphs,fp32+cl,fp32+compile (fp32, the plain "
                         "eager path, always included)")
    ap.add_argument("--devices", type=_list(str), default=None, help="cpu,cuda (default: both, CUDA if present)")
    ap.add_argument("--batches", type=_list(int), default=None, help="frames per forward (cameras), e.g. 1,4")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per figure (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-node", action="store_true", help="skip the node end-to-end part")
    ap.add_argument("--node-model", default="tiny_vit")
    ap.add_argument("--node-duration", type=float, default=None)
    ap.add_argument("--out", type=Path, default=harness.RESULTS)
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    a.models = a.models or ["vitl16", "rn101"]
    a.sizes = a.sizes or ([(240, 320)] if a.quick else [(240, 320), (480, 640), (720, 1280)])
    a.labels = a.labels or ([3, 150] if a.quick else [3, 20, 150])
    a.devices = a.devices or ["cpu", "cuda"]
    a.batches = a.batches or ([1, 4] if cuda and not a.quick else [1])
    if a.variants is None:
        a.variants = [Variant.parse(v) for v in ("fp32", "bf16", "fp32+pack+cl", "bf16+pack+cl+attn")]
        if cuda:
            a.variants += [Variant.parse(v) for v in ("fp16", "fp16+compile+graphs")]
    if Variant("fp32") not in a.variants:
        a.variants.insert(0, Variant("fp32"))  # the baseline every ratio refers to
    a.variants.sort(key=lambda v: not v.eager_fp32)
    a.node_duration = a.node_duration or (5.0 if a.quick else 20.0)
    unknown = [m for m in a.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    return a


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": harness.machine(), "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_start": os.getloadavg()[0], "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def node_part(a: argparse.Namespace, tmp: Path) -> dict:
    """benchmarks/bench_node.py in a child process (it starts lseg_node as its own process)."""
    out = tmp / "node.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_node", "--model", a.node_model,
           "--duration", str(a.node_duration), "--json", str(out), "--precision", "fp32"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-1500:]
        return {"error": f"bench_node.py exited {proc.returncode}", "output_tail": tail}
    res = json.loads(out.read_text())
    res["printed"] = proc.stdout.strip().splitlines()
    res["wall_seconds"] = time.perf_counter() - t
    return res


def table(rows) -> str:
    head = (f"{'model':10s} {'dev':4s} {'size':>9s} {'N':>3s} {'B':>2s} {'variant':20s} "
            + " ".join(f"{s:>14s}" for s in STAGES) + f" {'total':>15s} {'fps':>7s} {'GPU GB':>6s} {'RSS GB':>6s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for s in STAGES:
            ratio = r.ratio.get(s)
            cells.append(f"{r.stages[s] * 1e3:8.1f}" + (f" {ratio:4.2f}x" if ratio else "      "))
        tot = r.ratio.get("total")
        lines.append(f"{r.model:10s} {r.device:4s} {r.size[0]:4d}x{r.size[1]:<4d} {r.labels:3d} {r.batch:2d} "
                     f"{r.variant:20s} " + " ".join(f"{c:>14s}" for c in cells)
                     + f" {r.total * 1e3:9.1f}" + (f" {tot:4.2f}x" if tot else "      ")
                     + f" {r.batch / r.total:7.1f} " + (f"{r.peak_gpu_gb:6.2f}" if r.peak_gpu_gb is not None else "     -")
                     + f" {r.rss_gb:6.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    info = machine()
    started = datetime.datetime.now()
    stamp = harness.stamp(started)
    print(f"lseg_ros benchmark, {stamp}: {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
          f"CUDA: {info['cuda'] or 'none'}; torch {info['torch']}; load average {info['load_average_start']:.1f}")
    print("weights are random (UNTRAINED): speed does not depend on their values. Times in ms per forward "
          "(B frames); 'x' = fp32 eager time / this time, same run (>1 = faster)\n", flush=True)
    runs = {"cpu": a.runs or 1, "cuda": a.runs or 10, "warmup_cpu": 1, "warmup_cuda": 3}
    t0 = time.perf_counter()
    rows, switches, skipped = run_grid(a.models, a.devices, a.sizes, a.labels, a.variants, a.batches, runs)
    print()
    print(table(rows))
    for s in switches:
        print(f"label switch, 10 new labels ({s['model']}, {s['device']}): median {s['seconds_median'] * 1e3:.0f} ms "
              f"(first {s['seconds_first'] * 1e3:.0f} ms)")
    for s in skipped:
        print(f"skipped: {s}")
    result = {"machine": info, "untrained": True, "stages": list(STAGES),
              "stage_meaning": {"decode": "JPEG -> HxWx3 (cv2.imdecode), as for image/compressed input",
                                "upload": "uint8 to device, normalise, resize, pad (Predictor)",
                                "forward": "frame -> pixel embeddings (image path)",
                                "post": "label step (einsum, upsample) + mask/confidence/statistics on device",
                                "download": "results to host memory"},
              "rows": [asdict(r) for r in rows], "label_switch": switches, "skipped": skipped,
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "variants"},
              "variants": [v.name for v in a.variants]}
    if not a.no_node:
        print("\nnode end to end (bench_node.py: player -> lseg_node -> subscriber over DDS, same-run bare model):",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            result["node"] = node_part(a, Path(tmp))
        for line in result["node"].get("printed", [result["node"].get("error", ""),
                                                   result["node"].get("output_tail", "")]):
            print("  " + line)
    result["rss_gb_end"], result["rss_gb_peak"] = rss_gb()
    result["wall_seconds"] = time.perf_counter() - t0
    result["machine"]["load_average_end"] = os.getloadavg()[0]
    print(f"\npeak RSS {result['rss_gb_peak']:.2f} GB; {result['wall_seconds']:.0f} s")
    name = f"bench_{'gpu' if info['cuda'] else 'cpu'}{'_quick' if a.quick else ''}"
    harness.write_json(harness.result_path(name, out_dir=a.out, when=started), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
