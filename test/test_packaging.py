"""`pip install .` as a new user does it: into a fresh virtual environment that holds no other copy of
lseg_ros, then every console script and one real segmentation through the installed entry point.

The fresh venv gets the project's already-installed dependencies (torch, timm, ...) without a
download: a folder of links to every entry of this venv's site-packages except lseg_ros, put on its
path by a .pth file. Neither this venv's site-packages (with the CMake-installed copy of lseg_ros)
nor the source tree is on its path, so whatever lseg_ros it imports comes from the pip install.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, env, cwd, timeout=240):
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env, work dir): lseg_ros installed by pip from a copy of the sources into a fresh venv."""
    base = tmp_path_factory.mktemp("pip_install")
    venv, deps, src = base / "venv", base / "deps", base / "src"
    out = _run([sys.executable, "-m", "venv", "--without-pip", venv], os.environ, base)
    assert out.returncode == 0, out.stderr
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     os.environ, base).stdout.strip())
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if not entry.name.lower().startswith(("lseg_ros", "__pycache__")) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (site / "project_dependencies.pth").write_text(f"{deps}\n")
    # The files a wheel is built from (a copy: the build writes egg-info and build/ beside them).
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "README.md"):
        if (ROOT / name).is_file():
            (src / name).write_bytes((ROOT / name).read_bytes())
    shutil.copytree(ROOT / "lseg_ros", src / "lseg_ros", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(base)),
           "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LC_ALL": "C.UTF-8"}
    # --no-index: offline; the dependencies are declared and checked, found installed through the .pth.
    out = _run([venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--no-build-isolation", "-q", src],
               env, base, timeout=280)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return venv, env, base


def test_pip_install_is_the_only_lseg_ros_on_the_path(installed):
    venv, env, base = installed
    code = ("import lseg_ros, lseg_ros.model, lseg_ros.geometry, lseg_ros.imaging, lseg_ros.tools.segment, sys\n"
            "print(*lseg_ros.__path__, sep='\\n')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs')]\n"
            "assert not bad, bad\n")
    out = _run([venv / "bin" / "python", "-c", code], env, base)
    assert out.returncode == 0, out.stderr[-3000:]
    paths = out.stdout.split()
    assert len(paths) == 1 and Path(paths[0]).resolve().is_relative_to(venv.resolve()), paths
    assert not (Path(paths[0]) / "node").exists(), "the ROS node is not part of the pip install"


def test_every_console_script_runs_its_help(installed):
    venv, env, base = installed
    code = ("from importlib.metadata import distribution\n"
            "print(*sorted(e.name for e in distribution('lseg_ros').entry_points if e.group == 'console_scripts'))")
    scripts = _run([venv / "bin" / "python", "-c", code], env, base).stdout.split()
    # The same executables as the CMake install's bin/ (CMakeLists.txt), so the two lists cannot drift.
    cmake = sorted(re.findall(r'"bin/([\w-]+)=', (ROOT / "CMakeLists.txt").read_text()))
    assert scripts == cmake and scripts, (scripts, cmake)
    for script in scripts:
        out = _run([venv / "bin" / script, "--help"], env, base)
        assert out.returncode == 0, (script, out.stderr[-3000:])
        assert out.stdout.startswith(f"usage: {script}"), out.stdout[:200]


def test_lseg_segment_one_image_with_a_tiny_model(installed):
    import cv2

    venv, env, base = installed
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64] = (0, 0, 220)  # BGR: a red half and a green half
    img[:, 64:] = (0, 200, 0)
    assert cv2.imwrite(str(base / "photo.png"), img)
    out = _run([venv / "bin" / "lseg-segment", base / "photo.png", "-o", base / "out", "--config", "tiny_vit",
                "-l", "red, green, other"], env, base)
    assert out.returncode == 0, out.stderr[-3000:]
    mask = cv2.imread(str(base / "out" / "photo_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape == (96, 128) and mask.max() <= 2
    assert (base / "out" / "photo_overlay.png").is_file() and (base / "out" / "photo_scores.json").is_file()
    assert "untrained" in out.stderr.lower()  # random weights are called so
