"""Shared test fixtures.

ROS tests get their own ROS_DOMAIN_ID: ids are claimed with a lock file under the temp dir, so
concurrent test runs on one machine (several checkouts, CI beside a developer) never see each
other's nodes. HF_HUB_OFFLINE keeps timm/open_clip from reaching for a model hub.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ros_harness import claim_domain_id

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ros_domain():
    """A ROS_DOMAIN_ID claimed for this test module; subprocesses get it through ros_env()."""
    domain, fh = claim_domain_id()
    try:
        yield domain
    finally:
        fh.close()


@pytest.fixture(scope="module")
def ros_env(ros_domain):
    """Environment for ROS subprocesses of this module: its own domain, repo root importable."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(ros_domain)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def rclpy_context(ros_domain):
    """An initialised rclpy context on this module's domain, shut down after the module."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


PYTHON = sys.executable


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory):
    """The tiny models exported to ONNX (test/onnx_exports.py), once per session."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (requirements-common.txt: scripts/setup.sh installs them)")
    from onnx_exports import make_exports

    return make_exports(tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def benchmark_dry_run(tmp_path):
    """Runs `python -m benchmarks NAME --dry-run ARGS --out tmp_path` (a prepared GPU check on the CPU,
    tiny models) and returns (the report's JSON path, its data); asserts it ended well and says so."""
    def run(name: str, *args: str, report: str):
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "benchmarks", name, "--dry-run", *args, "--out", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        (path,) = tmp_path.glob(report)
        data = json.loads(path.read_text())
        assert data["env"]["dry_run"] and data["env"]["untrained"]
        return path, data
    return run
