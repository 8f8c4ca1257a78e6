"""benchmarks/bench_node.py, the node benchmark the prepared GPU run uses, completes on the CPU with one
and two cameras (tiny model, a few seconds each) and reports what ran; and its two estimators: a
camera's rate between its first and last output, the node's own work averaged over /diagnostics periods."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.timeout(420)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))


def bench_node_function(call: str):
    """`call` evaluated in a process started as the benchmarks are (`python -m` from the repository
    root), so this test process keeps importing the installed package."""
    code = f"import json; from benchmarks.bench_node import *; print(json.dumps({call}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_stream_rate_counts_the_time_between_first_and_last_output():
    rates = bench_node_function("[stream_rate([10.0, 10.1, 10.2, 10.4]), stream_rate([5.0]), stream_rate([])]")
    assert rates == pytest.approx([3 / 0.4, 0.0, 0.0])  # one output or none: a starved camera


def test_mean_stages_averages_each_stage_over_the_periods():
    got = bench_node_function('mean_stages(["decode 0.10, mask 0.30, overlay 0.70", '
                              '"decode 0.30, mask 0.50, overlay 0.90"])')
    assert got == {"decode": 0.2, "mask": 0.4, "overlay": 0.8}


def test_bench_node_runs_one_and_two_cameras_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "bench_node", "--model", "tiny_vit",
                           "--scenarios", "1x10,2x10", "--duration", "4", "--rounds", "1", "--json", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["untrained"] and data["model"] == "tiny_vit"
    one, two = data["scenarios"]
    assert (one["cameras"], two["cameras"]) == (1, 2)
    for sc in (one, two):
        assert len(sc["per_camera_fps"]) == sc["cameras"] and all(v > 0 for v in sc["per_camera_fps"])
        assert sc["bare_fps"] > 0 and sc["latency_ms_p50"] > 0
        diag = sc["node_diagnostics"]
        assert diag["device"] == "cpu" and diag["fast_path"]  # what actually ran, from the node itself
        assert diag["node_own_work_ms_per_frame"] > 0 and "overlay" in diag["node_stages_ms_per_frame"]
        assert all(r["outputs_delivered"] for r in sc["rounds"])  # every image output reached this process
    assert "device cpu" in proc.stdout
