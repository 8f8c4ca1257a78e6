"""Shared test fixtures.

ROS tests get their own ROS_DOMAIN_ID: ids are claimed with a lock file under the temp dir, so
concurrent test runs on one machine (several checkouts, CI beside a developer) never see each
other's nodes. HF_HUB_OFFLINE keeps timm/open_clip from reaching for a model hub.
"""
import fcntl
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _claim_domain_id():
    lock_dir = Path(tempfile.gettempdir()) / "lseg_ros_test_domains"
    lock_dir.mkdir(exist_ok=True)
    start = os.getpid() % 100
    for i in range(101):  # Fast DDS on Linux accepts domain ids 0..101 with default ports
        domain = 1 + (start + i) % 100
        fh = open(lock_dir / f"{domain}.lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        return domain, fh
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..100 (all claimed by other test runs)")


@pytest.fixture(scope="module")
def ros_domain():
    """A ROS_DOMAIN_ID claimed for this test module; subprocesses get it through ros_env()."""
    domain, fh = _claim_domain_id()
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
