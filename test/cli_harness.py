"""Helpers for the tests that run what ROS 2 users type: `ros2 launch`, `ros2 service call`, `ros2 topic
echo`, `ros2 param set`, `ros2 lifecycle`. The commands are the README's ("On a ROS 2 install"),
read from README.md, so a changed README command fails the tests until they follow.

The launch and CLI tools are not on PyPI: scripts/setup.sh installs them from
../shared/vendor/ros2-python when that folder is present; without them these tests skip.
Every command runs in its own session (process group); `Launch.interrupt` is Ctrl-C to the group.
"""
from __future__ import annotations

import filecmp
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from ros_harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the venv the tests run in (.venv: Kilted, .venv-jazzy: Jazzy)
ROS2 = VENV / "bin" / "ros2"
VENDOR = "../shared/vendor/ros2-python"
FAKE_CAMERA = ROOT / "test" / "fake_camera.py"
# What the tests put where the README names a real checkpoint: the tiny untrained model on the CPU.
TINY_ARGS = ("model:=tiny_vit", "device:=cpu")
# Signs of an unclean end in launch's output (a node's traceback, a C++ abort, a killed process).
ALARMS = ("Traceback", "terminate called", "exit code -", "Segmentation fault", "core dumped")


def tools_missing() -> Optional[str]:
    """Why the ROS 2 CLI tests cannot run here, or None."""
    if not ROS2.exists():
        return (f"needs the ROS 2 launch/CLI tools ({ROS2} missing): scripts/setup.sh installs them from "
                f"{VENDOR} when ../shared is present")
    try:
        import launch_ros  # noqa: F401
        import composition_interfaces.srv  # noqa: F401
    except ImportError as exc:
        return f"needs launch_ros and composition_interfaces from {VENDOR} (scripts/setup.sh): {exc}"
    return None


def skip_module_without_tools() -> None:
    reason = tools_missing()
    if reason:
        pytest.skip(reason, allow_module_level=True)


def check_installed_launch_file() -> None:
    """`ros2 launch` runs the installed copy: it must be this tree's."""
    installed = VENV / "share" / "lseg_ros" / "launch" / "lseg.launch.py"
    assert installed.exists() and filecmp.cmp(installed, ROOT / "launch" / "lseg.launch.py", shallow=False), (
        f"{installed} differs from launch/lseg.launch.py: run scripts/setup.sh")


# --- the README's commands ------------------------------------------------------------------------

def readme_commands() -> List[str]:
    """The `ros2 ...` lines of the README's "On a ROS 2 install" section, comments stripped, in order."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## On a ROS 2 install.*?$(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## On a ROS 2 install' section"
    out = []
    for block in re.findall(r"```bash\n(.*?)```", section.group(1), re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("ros2 "):
                out.append(line)
    return out


def readme_command(prefix: str) -> List[str]:
    """The README command starting with `prefix`, split like a shell would (no expansion)."""
    hits = [c for c in readme_commands() if c.startswith(prefix)]
    assert len(hits) == 1, f"README.md: expected one command starting {prefix!r}, found {hits}"
    return shlex.split(hits[0])


def tiny(argv: Sequence[str]) -> List[str]:
    """A README launch command with its `weights:=<real checkpoint>` replaced by the tiny CPU model."""
    out = [a for a in argv if not a.startswith("weights:=")]
    assert len(out) == len(argv) - 1, f"expected one weights:= argument in {argv}"
    return out + list(TINY_ARGS)


def renamespace(argv: Sequence[str], old: str, new: str) -> List[str]:
    """argv with the ROS names `old...` rewritten to `new...` (a README example run in another namespace)."""
    return [re.sub(rf"(^|:=){re.escape(old)}", rf"\g<1>{new}", a) for a in argv]


# --- running commands ------------------------------------------------------------------------------

def cli_env(ros_env: Dict[str, str]) -> Dict[str, str]:
    """ros_env (own ROS_DOMAIN_ID, repo importable) plus what a sourced ROS install sets."""
    env = dict(ros_env)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(VENV), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(VENV / "bin"), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="lseg_ros_log_")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def ros2(args: Sequence[str], env: Dict[str, str], timeout: float = 60.0, settle: float = 30.0) -> subprocess.CompletedProcess:
    """`ros2 <args>` in its own session; killed with its group on timeout (then the test fails).
    Each command discovers the graph afresh (0.5 s by default): on a busy machine a node-level command
    (`param set`, `lifecycle get`) may answer "Node not found" for a node that is up, several times in
    a row (CI met three); that is retried, with growing pauses, for up to `settle` seconds."""
    argv = [str(ROS2), *args]
    deadline = time.monotonic() + settle
    pause = 0.5
    while True:
        proc = subprocess.Popen(argv, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"`{shlex.join(argv[1:])}` did not finish in {timeout:.0f} s:\n{out}\n{err}")
        if not (proc.returncode != 0 and "Node not found" in err and time.monotonic() + pause < deadline):
            break
        time.sleep(pause)
        pause = min(2 * pause, 4.0)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def service_call_unsupported() -> Optional[str]:
    """Why `ros2 service call` cannot run here, or None: the vendored ros2service is rolling's, which
    uses `with rclpy.init():`; rclpy 7 (Jazzy) returns None there (TypeError)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("ros-rclpy").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None
    if major < 8:
        return (f"the vendored ros2service ({VENDOR}, rolling) needs rclpy >= 8 for `with rclpy.init():`; "
                f"this is rclpy {version('ros-rclpy')} (Jazzy)")
    return None


def ros2_until(args: Sequence[str], ok, env: Dict[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Repeats a graph query (`ros2 node list`, `ros2 service list`) until `ok(result)`: without a daemon,
    each run discovers the graph afresh and may miss a participant on a busy machine."""
    deadline = time.monotonic() + timeout
    while True:
        res = ros2(args, env)
        if ok(res) or time.monotonic() > deadline:
            return res


def echo_once(argv: Sequence[str], env: Dict[str, str], timeout: int = 30) -> str:
    """A `ros2 topic echo --once TOPIC TYPE` command line (argv without `ros2`), given a timeout."""
    res = ros2([*argv, "--timeout", str(timeout)], env, timeout + 15)
    assert res.returncode == 0 and res.stdout.strip(), f"{shlex.join(argv)}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def wait_labels(argv: Sequence[str], expected: List[str], env: Dict[str, str], tries: int = 3) -> List[str]:
    """Echoes frames until one carries `expected` (a frame in flight during a swap may carry the old set)."""
    labels: List[str] = []
    for _ in range(tries):
        labels = echoed_labels(echo_once(argv, env))
        if labels == expected:
            break
    return labels


def echoed_labels(text: str) -> List[str]:
    """The `labels:` list of an echoed message (ros2 topic echo prints YAML, one `- item` a line)."""
    import yaml

    return list(yaml.safe_load(text.split("\n---")[0])["labels"])


class Camera:
    """test/fake_camera.py in its own session: a real photo published on `topic` until stopped."""

    def __init__(self, topic: str, env: Dict[str, str], rate: float = 2.0, size=(320, 240)) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_CAMERA), "--topic", topic, "--rate", str(rate), "--width", str(size[0]),
             "--height", str(size[1]), "--duration", "3600", "--wait-subscriber", "120"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Launch:
    """`ros2 launch ...` in its own session, stdout and stderr to files, with its processes tracked."""

    def __init__(self, args: Sequence[str], env: Dict[str, str]) -> None:
        import psutil

        self.args = list(args)
        self.out_path = Path(tempfile.mkstemp(prefix="ros2_launch_", suffix=".out")[1])
        self.err_path = Path(tempfile.mkstemp(prefix="ros2_launch_", suffix=".err")[1])
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen([str(ROS2), "launch", *self.args], env=env, cwd=tempfile.gettempdir(),
                                     stdout=self._out, stderr=self._err, start_new_session=True)
        self._psutil = psutil
        self.seen: Dict[int, "psutil.Process"] = {}

    @property
    def command(self) -> str:
        return "ros2 launch " + shlex.join(self.args)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"$ {self.command}\n--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def track(self) -> List[int]:
        """Records the launch's descendants (the nodes) so that orphans can be found after it ends."""
        try:
            for p in self._psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except self._psutil.NoSuchProcess:
            pass
        return sorted(self.seen)

    def wait_ready(self, text: str = "ready:", timeout: float = 90.0) -> None:
        wait_for(lambda: text in self.stdout() or self.proc.poll() is not None, timeout, f"'{text}' in launch output")
        assert self.proc.poll() is None, f"ros2 launch exited with {self.proc.returncode}:\n{self.output()}"
        self.track()

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.flush()
            self._err.flush()

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C: SIGINT to the launch's whole process group; its exit code."""
        self.track()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ros2 launch still running {timeout:.0f} s after SIGINT:\n{self.output()}")

    def leftovers(self) -> List[str]:
        """Processes of this launch (tracked descendants, or anything in its session) still alive."""
        alive = []
        for pid, p in self.seen.items():
            try:
                if p.is_running() and p.status() != self._psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())}")
            except self._psutil.NoSuchProcess:
                pass
        for p in self._psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid not in self.seen and os.getsid(p.pid) == self.proc.pid and p.status() != self._psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])}")
            except (OSError, self._psutil.NoSuchProcess):
                pass
        return alive

    def close(self) -> None:
        """Ends whatever is left (SIGINT, then SIGKILL to the group) and closes the logs."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for p in self.seen.values():
            try:
                p.kill()
            except self._psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._out.close()
        self._err.close()


def assert_clean_exit(launch: Launch, rc: int) -> None:
    """Exit code 0, every node finished cleanly, nothing left running, nothing alarming in the output."""
    text = launch.output()
    assert rc == 0, f"ros2 launch exited with {rc}:\n{text}"
    time.sleep(0.2)
    assert not launch.leftovers(), f"processes left running after ros2 launch ended: {launch.leftovers()}\n{text}"
    for alarm in ALARMS:
        assert alarm not in text, f"{alarm!r} in the output of {launch.command}:\n{text}"
    assert "process has finished cleanly" in launch.stdout() + launch.stderr(), text


# The README's `ros2 ...` commands ("On a ROS 2 install"), exactly as the tests run them (the tests swap
# the checkpoint for the tiny model and, for the namespaced run, prefix the names). A README change
# fails test_node_launch.py::test_readme_ros2_commands_are_the_tested_ones until this list follows.
README_COMMANDS = [
    "ros2 launch lseg_ros lseg.launch.py image:=/camera/color/image_raw weights:=$HOME/weights/demo_e200.ckpt",
    'ros2 service call /set_labels lseg_ros/srv/SetLabels "{labels: [floor, wall, person, other]}"',
    "ros2 topic echo --once /lseg/class_confidences lseg_ros/msg/ClassConfidences",
    'ros2 param set /lseg_node labels "[floor, wall, person, chair, other]"',
    "ros2 launch lseg_ros lseg.launch.py autostart:=false weights:=$HOME/weights/demo_e200.ckpt",
    "ros2 lifecycle set /lseg_node configure",
    "ros2 lifecycle get /lseg_node",
]
