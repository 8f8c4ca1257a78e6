"""The tools are ROS-free console scripts: importable without rclpy, each with --help."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ["segment", "evaluate", "train", "convert", "fetch"]


def test_no_ros_imports():
    code = ("import sys\n"
            + "".join(f"import lseg_ros.tools.{t}\n" for t in TOOLS)
            + "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'sensor_msgs')]\n"
            + "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool, capsys):
    import importlib

    mod = importlib.import_module(f"lseg_ros.tools.{tool}")
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert f"lseg-{tool}" in capsys.readouterr().out
