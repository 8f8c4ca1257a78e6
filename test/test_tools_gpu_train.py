"""benchmarks/gpu_train.py, the prepared GPU training check, completes its --dry-run on the CPU (tiny ViT):
the training steps with and without activation checkpointing in processes of their own, then lseg-train
and lseg-evaluate under torchrun; the device machine's minutes are not spent finding script errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_train_dry_run(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "gpu_train", "--dry-run", "--steps", "3",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (report,) = tmp_path.glob("gpu_train_dry-run_tiny_vit_cpu_*.json")
    data = json.loads(report.read_text())
    assert data["env"]["dry_run"] and data["env"]["untrained"]
    plain, ckpt = data["steps"]
    assert (plain["variant"], ckpt["variant"]) == ("plain", "checkpoint")
    for s in (plain, ckpt):
        assert len(s["losses"]) == 3 and s["median_step_s"] > 0 and s["peak_mb"] > 0 and s["amp"] == "off"
    # checkpointing recomputes the blocks, it does not change the arithmetic
    assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    train, evaluate = data["tools"]["train"], data["tools"]["evaluate"]
    assert train["rc"] == 0 and train["record"]["world_size"] == 1 and train["record"]["iteration"] == 2
    assert evaluate["rc"] == 0 and evaluate["record"]["world_size"] == 1 and evaluate["record"]["images"] == 4
    assert report.with_suffix(".txt").read_text().startswith("# benchmarks/gpu_train.py on cpu")
