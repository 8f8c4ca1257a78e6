"""Signals lseg_node processes in a given state and measures how they end (test_node_shutdown.py and
benchmarks/shutdown_times.py share it).

A scenario: start lseg_node (tiny model) in its own namespace and node name, bring it to a state
(starting, idle, mid-frame on a 2048x2048 frame, mid label switch, lifecycle states), send SIGINT,
SIGINT twice 20 ms apart (Ctrl-C on `ros2 launch`: the terminal signals the process group and launch
forwards SIGINT) or SIGTERM, then record the exit status, the seconds from the first signal to the
exit, output lines that mean a crash and child processes left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ros_harness import TINY, NodeProcess, TestNode, child_pids, diagnostics_counter, image_msg, photo, wait_for

SIGNALS: Dict[str, List[int]] = {
    "sigint": [signal.SIGINT],
    "sigint_twice": [signal.SIGINT, signal.SIGINT],
    "sigterm": [signal.SIGTERM],
}
SIGNAL_GAP_S = 0.02
# Output that means the process did not end cleanly (aborts, tracebacks, executor errors).
CRASH_TEXT = ("terminate called", "Traceback", "KeyboardInterrupt", "exception was never retrieved",
              "failed to initialize wait set", "Segmentation fault", "core dumped", "Aborted")
EXIT_LIMIT_S = 10.0  # generous: a busy 2-core CI machine; the target is 2 s
BIG_SIDE = 2048  # mid-frame: tiny model, max_side 0 -> several seconds per frame on a CPU


@dataclass
class Outcome:
    state: str
    signal: str
    returncode: Optional[int]
    seconds: float  # first signal -> process gone (inf: still running after EXIT_LIMIT_S, killed)
    phase: str  # what the log showed when the signal went out (the state really reached?)
    crash_lines: List[str] = field(default_factory=list)
    orphans: List[int] = field(default_factory=list)
    note: str = ""
    log_path: str = ""
    answer: Optional[Tuple[bool, List[str], str]] = None  # a request in flight answered: success, labels, message

    @property
    def clean(self) -> bool:
        return (self.returncode == 0 and self.seconds <= EXIT_LIMIT_S and not self.crash_lines
                and not self.orphans)

    def describe(self) -> str:
        return (f"{self.state}/{self.signal}: exit {self.returncode} after {self.seconds:.2f} s (phase {self.phase})"
                f"{'; crash output: ' + ' | '.join(self.crash_lines[:3]) if self.crash_lines else ''}"
                f"{'; orphaned children ' + str(self.orphans) if self.orphans else ''}"
                f"{'; ' + self.note if self.note else ''} [log {self.log_path}]")


def _descendants(pid: int) -> List[int]:
    out, todo = [], [pid]
    while todo:
        for c in child_pids(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _phase(log: str) -> str:
    if "ready:" in log:
        return "active"
    if "configured:" in log:
        return "configured"
    return "starting (logged)" if log.strip() else "starting (nothing logged)"


class Scenario:
    """One lseg_node process, named and namespaced `name`, driven to a state by the test node `t`."""

    def __init__(self, env: Dict[str, str], t: TestNode, name: str, params=TINY) -> None:
        self.t, self.name, self.ns = t, name, f"/{name}"
        self.node = NodeProcess(env, params=("diagnostics_period:=0.5",) + tuple(params), params_file=False,
                                ros_args=("-r", f"__node:={name}", "-r", f"__ns:={self.ns}"))
        self.pending: Any = None  # a service future in flight at the signal
        self.phase_note = ""  # what the preparation saw (e.g. frame received, no output yet)

    # -- states ---------------------------------------------------------------------------------
    def wait_active(self, timeout: float = 300.0) -> None:
        topic = f"{self.ns}/image"
        wait_for(lambda: self.t.node.count_subscribers(topic) > 0 or self.node.proc.poll() is not None,
                 timeout, f"{self.name} subscribed to {topic}")
        assert self.node.proc.poll() is None, f"{self.name} exited early:\n{self.node.log()}"

    def mid_frame(self, side: int = BIG_SIDE) -> None:
        """Publishes a side x side photo and returns once the node has had it for a while."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.wait_active()
        pub = self.t.node.create_publisher(Image, f"{self.ns}/image",
                                           QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        wait_for(lambda: pub.get_subscription_count() > 0, 20, "big-frame publisher matched")
        big = photo(side, side) if side < 1024 else np.ascontiguousarray(np.tile(photo(512, 512), (side // 512, side // 512, 1)))
        pub.publish(image_msg(big, "rgb8", self.t.node.get_clock().now().to_msg(), frame_id="big"))
        diag = lambda key: diagnostics_counter(self.t.messages("/diagnostics"), self.name, key) or 0  # noqa: E731
        wait_for(lambda: diag("frames_received") >= 1, 30, f"{self.name} received the big frame")
        time.sleep(1.0)  # conversion done, inference (seconds at 2048x2048) under way
        self.phase_note = "frame in hand" if diag("frames_processed") == 0 else "frame already processed"

    def mid_label_switch(self, n: int = 1000) -> None:
        """Sends set_labels with n labels (seconds of text encoding) and returns while it is in flight."""
        from lseg_ros.srv import SetLabels

        self.wait_active()
        client = self.t.node.create_client(SetLabels, f"{self.ns}/set_labels")
        assert client.wait_for_service(timeout_sec=20), "set_labels not available"
        self.pending = client.call_async(SetLabels.Request(labels=[f"object number {i}" for i in range(n)]))
        time.sleep(1.0)

    def lifecycle(self, target: str) -> None:
        """With autostart false: 'unconfigured' (wait), 'configuring' (signal during configure),
        'inactive' (configured, not active), 'cleaning_up' (signal right after asking for cleanup);
        with autostart: 'deactivating' (signal right after asking for deactivate)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.t.node.create_client(ChangeState, f"{self.ns}/{self.name}/change_state")
        assert client.wait_for_service(timeout_sec=120), f"{self.name}/change_state not available"

        def change(tid: int, wait: bool = True):
            fut = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
            if wait:
                wait_for(fut.done, 120, f"transition {tid}")
                assert fut.result().success, f"transition {tid} failed:\n{self.node.log()}"
            return fut

        if target == "deactivating":
            self.wait_active()
            self.pending = change(Transition.TRANSITION_DEACTIVATE, wait=False)
            time.sleep(0.05)
            return
        time.sleep(0.5)
        if target == "unconfigured":
            return
        if target == "configuring":
            self.pending = change(Transition.TRANSITION_CONFIGURE, wait=False)
            time.sleep(0.3)
            return
        change(Transition.TRANSITION_CONFIGURE)
        time.sleep(0.3)
        if target == "cleaning_up":
            self.pending = change(Transition.TRANSITION_CLEANUP, wait=False)
            time.sleep(0.05)

    # -- the signal -----------------------------------------------------------------------------
    def signal(self, state: str, sig_name: str) -> Outcome:
        proc = self.node.proc
        phase = _phase(self.node.log()) + (f", {self.phase_note}" if self.phase_note else "")
        if proc.poll() is not None:
            return Outcome(state, sig_name, proc.returncode, 0.0, phase, note="exited before the signal",
                           log_path=str(self.node.log_path))
        children = _descendants(proc.pid)
        if self.pending is not None and self.pending.done():
            phase += ", request already answered"
        t0 = time.monotonic()
        for i, sig in enumerate(SIGNALS[sig_name]):
            if i:
                time.sleep(SIGNAL_GAP_S)
            proc.send_signal(sig)
        try:
            proc.wait(timeout=EXIT_LIMIT_S)
            seconds = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            seconds = float("inf")
            proc.kill()
            proc.wait()
        orphans = [c for c in children if _running(c)]
        for c in orphans:
            os.kill(c, signal.SIGKILL)
        self.node.stop()
        log = self.node.log()
        crash = [ln for ln in log.splitlines() if any(s in ln for s in CRASH_TEXT)]
        answer = None
        if self.pending is not None and self.pending.done() and self.pending.result() is not None:
            r = self.pending.result()
            if hasattr(r, "labels"):  # set_labels (a lifecycle transition's answer has only success)
                answer = (bool(r.success), list(r.labels), str(r.message))
        return Outcome(state, sig_name, proc.returncode, seconds, phase, crash, orphans, "", str(self.node.log_path),
                       answer)


def _prepare(sc: Scenario, state: str) -> None:
    if state == "starting_configure":  # the node object exists, autostart is building the model
        wait_for(lambda: sc.name in sc.t.node.get_node_names() or sc.node.proc.poll() is not None, 120,
                 f"{sc.name} in the ROS graph", period=0.01)
        sc.phase_note = "node in the ROS graph"
    elif state.startswith("starting"):
        time.sleep(float(state.split("_")[1].rstrip("s")))  # e.g. starting_1.0s: importing
    elif state == "idle":
        sc.wait_active()
        time.sleep(0.5)
    elif state == "mid_frame":
        sc.mid_frame()
    elif state == "vitl16_building":
        time.sleep(8.0)  # imports done (~5 s), the ViT-L/16 + CLIP text build under way (tens of seconds)
    elif state == "vitl16_mid_frame":
        sc.mid_frame(480)  # one ViT-L/16 forward on the CPU: 10-30 s
    elif state == "mid_label_switch":
        sc.mid_label_switch()
    elif state.startswith("lifecycle_"):
        sc.lifecycle(state[len("lifecycle_"):])
    else:
        raise ValueError(f"unknown state {state!r}")


STATES = ("starting_1.0s", "starting_configure", "idle", "mid_frame", "mid_label_switch",
          "lifecycle_unconfigured", "lifecycle_configuring", "lifecycle_inactive")
# Benchmark only (benchmarks/shutdown_times.py --states ...): more transitions, and the real-size model
# (untrained ViT-L/16, ~1.5 GB per process).
EXTRA_STATES = ("lifecycle_deactivating", "lifecycle_cleaning_up", "vitl16_building", "vitl16_mid_frame")


def params_for(state: str) -> tuple:
    if state == "mid_frame":
        return TINY + ("max_side:=0", f"max_image_pixels:={BIG_SIDE * BIG_SIDE}")
    if state == "lifecycle_deactivating":
        return TINY
    if state.startswith("lifecycle_"):
        return TINY + ("autostart:=false",)
    if state.startswith("vitl16_"):
        return ("model:=vitl16", "device:=cpu", "num_threads:=1")
    return TINY


def run_round(env: Dict[str, str], t: TestNode, state: str, signals=tuple(SIGNALS), tag: str = "") -> List[Outcome]:
    """One process per signal, in parallel, each brought to `state` and signalled."""
    def one(sig_name: str) -> Outcome:
        name = f"sd_{state.replace('.', '_')}_{sig_name}{tag}".lower()
        sc = Scenario(env, t, name, params_for(state))
        try:
            _prepare(sc, state)
        except Exception as e:  # the state was not reached: still signal, and say so
            out = sc.signal(state, sig_name)
            out.note = f"state not reached ({type(e).__name__}: {str(e)[:200]}); " + out.note
            return out
        return sc.signal(state, sig_name)

    if "/diagnostics" not in t.received:
        from diagnostic_msgs.msg import DiagnosticArray
        t.subscribe("/diagnostics", DiagnosticArray)
    with ThreadPoolExecutor(len(signals)) as pool:
        return list(pool.map(one, signals))


def lifecycle_available() -> bool:
    """True when the node under test is a lifecycle node (params table has `autostart`)."""
    from lseg_ros.node import params as P
    return "autostart" in P.BY_NAME

