"""lseg_node's input QoS and frame handling over DDS, cameras in separate processes:
a reliable and then a best-effort 640x480 camera both get through (input_reliability: auto), and a
100 Hz burst does not build a queue (newest frame only: stamp-to-publish latency stays bounded).
"""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from ros_harness import BIG_BUFFERS, ROOT, TINY, NodeProcess, TestNode, diagnostics_value, image_msg, photo, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray

    from lseg_ros.msg import ClassConfidences

    # The launch file sets FASTDDS_BUILTIN_TRANSPORTS for the node; do as it does.
    node = NodeProcess(ros_env, params=TINY + ("diagnostics_period:=0.5",),
                       extra_env={"FASTDDS_BUILTIN_TRANSPORTS": BIG_BUFFERS})
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        t.subscribe("lseg/class_confidences", ClassConfidences)
        t.subscribe("/diagnostics", DiagnosticArray)
        yield node, t
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def _received(t) -> int:
    return int(diagnostics_value(t.messages("/diagnostics"), "frames_received") or 0)


def _camera(env, reliability: str, extra_env=None, duration=3.0, rate=20.0):
    cmd = [sys.executable, str(ROOT / "test" / "fake_camera.py"), "--reliability", reliability,
           "--width", "640", "--height", "480", "--rate", str(rate), "--duration", str(duration)]
    res = subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1])


def _settled_count(t) -> int:
    """frames_received once two consecutive diagnostics agree (in-flight frames delivered)."""
    def stable():
        msgs = [m for m in t.messages("/diagnostics")][-2:]
        vals = [diagnostics_value([m], "frames_received") for m in msgs]
        return len(vals) == 2 and vals[0] == vals[1] and vals[0]
    t.clear(keep=())
    return int(wait_for(stable, 20, "diagnostics to settle"))


@pytest.mark.parametrize("reliability, camera_env", [("reliable", None), ("best_effort", {"FASTDDS_BUILTIN_TRANSPORTS": BIG_BUFFERS})])
def test_camera_qos_kinds_640x480_frames_arrive(rig, ros_env, reliability, camera_env):
    node, t = rig
    before = _settled_count(t)
    published = _camera(ros_env, reliability, camera_env)
    got = _settled_count(t) - before
    assert f"(Image, {reliability}," in node.log(), node.log()
    # best effort loses a few frames when the host is loaded (measured 96-100% with 4 MB buffers)
    assert got >= 0.75 * published, f"{reliability} camera: {got} of {published} 640x480 frames reached the node"
    assert diagnostics_value(t.messages("/diagnostics"), "input_reliability") == reliability


def test_100hz_burst_does_not_build_a_queue(rig):
    from sensor_msgs.msg import Image

    node, t = rig
    pub = t.node.create_publisher(Image, "image", 5)
    wait_for(lambda: pub.get_subscription_count() > 0, 20, "node subscribed")
    img = photo(640, 480)
    t.clear(keep=())
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 4.0:
        pub.publish(image_msg(img, "rgb8", t.node.get_clock().now().to_msg()))
        sent += 1
        time.sleep(max(0.0, t0 + sent / 100.0 - time.monotonic()))
    wait_for(lambda: len(t.messages("lseg/class_confidences")) >= 3, 20, "outputs")
    time.sleep(1.0)
    out = t.timed("lseg/class_confidences")
    lat = np.array([arr - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec) for arr, m in out])
    rate_in = sent / 4.0
    assert rate_in > 60, f"the test could only publish {rate_in:.0f} Hz"
    # DDS itself delivers fewer than 100 Hz of 900 KB frames on this loaded 2-core host (~15-30 Hz);
    # more than the node can process (~3-7 Hz with the tiny model), which is what matters here.
    # One inference here takes ~0.1-0.4 s: the latency of every output stays at a few inferences,
    # while a queue of 100 Hz frames would grow it by seconds over the burst.
    assert len(out) < sent / 3, f"{len(out)} outputs for {sent} frames: frames were queued, not dropped"
    assert lat.max() < 2.5, f"stamp-to-output latency grew to {lat.max():.2f} s (median {np.median(lat):.2f})"
    assert lat[-3:].mean() < lat[:3].mean() + 1.0, f"latency grows over the burst: {lat.round(2).tolist()}"
    def counted():
        d = t.messages("/diagnostics")
        rec, proc, over, stale, invalid = (int(diagnostics_value(d, k) or 0) for k in (
            "frames_received", "frames_processed", "dropped_overwritten", "dropped_stale", "dropped_invalid"))
        # every received frame was either processed or counted as dropped (one may be in the slot)
        return over > 0 and rec - 1 <= proc + over + stale + invalid <= rec
    try:
        wait_for(counted, 10, "received and overwritten frames counted in /diagnostics")
    except AssertionError:
        d = t.messages("/diagnostics")[-1:]
        raise AssertionError(f"sent {sent}, outputs {len(out)}, diagnostics {[(kv.key, kv.value) for kv in d[0].status[0].values] if d else None}")
    t.node.destroy_publisher(pub)
