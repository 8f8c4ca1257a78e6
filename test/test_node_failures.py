"""lseg_node under bad input: each broken frame is logged and dropped, the node keeps serving and the
next good frame is processed; bad weights / device / parameters stop it at start with a clear error.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from ros_harness import TINY, NodeProcess, TestNode, diagnostics_value, image_msg, photo, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    node = NodeProcess(ros_env, params=TINY + ("max_image_pixels:=1000000", "diagnostics_period:=0.5"))
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        t.subscribe("lseg/mask", Image)
        t.subscribe("/diagnostics", DiagnosticArray)
        t.pub = t.node.create_publisher(Image, "image", 5)
        t.cpub = t.node.create_publisher(CompressedImage, "image/compressed", 5)
        wait_for(lambda: t.pub.get_subscription_count() > 0, 20, "node subscribed to image")
        yield node, t
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def _now(t, age: float = 0.0):
    from rclpy.duration import Duration
    return (t.node.get_clock().now() - Duration(seconds=age)).to_msg()


def _good_frame_is_processed(t, pub=None, msg=None, timeout=30.0):
    msg = msg or image_msg(photo(160, 120), "rgb8", _now(t), frame_id="good")
    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (pub or t.pub).publish(msg)
        try:
            return wait_for(lambda: [m for m in t.messages("lseg/mask")
                                     if (m.header.stamp.sec, m.header.stamp.nanosec) == key], 0.5, "mask")
        except AssertionError:
            continue
    raise AssertionError("the good frame after a bad one was not processed")


BAD = {
    "unsupported_encoding": (lambda t: image_msg(np.zeros((8, 8), np.float32), "32FC1", _now(t)),
                             "unsupported encoding '32FC1'"),
    "step_too_small": (lambda t: image_msg(np.zeros((8, 8, 3), np.uint8), "rgb8", _now(t), step=10), "step 10"),
    "data_too_short": (lambda t: image_msg(np.zeros((8, 8, 3), np.uint8), "rgb8", _now(t), data=bytes(100)),
                       "data has 100 bytes"),
    "empty": (lambda t: image_msg(np.zeros((0, 0, 3), np.uint8), "rgb8", _now(t), step=0, data=b""), "empty image"),
    "huge": (lambda t: image_msg(np.zeros((1024, 1280), np.uint8), "mono8", _now(t)), "too large"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_frame_is_dropped_and_the_node_keeps_serving(rig, kind):
    node, t = rig
    make, text = BAD[kind]
    bad = make(t)
    t.pub.publish(bad)
    wait_for(lambda: text in node.log(), 20, f"an error naming the problem ({text!r})")
    assert not [m for m in t.messages("lseg/mask") if m.header.stamp == bad.header.stamp]
    _good_frame_is_processed(t)
    assert node.proc.poll() is None


def test_stale_frames_are_dropped_and_counted(rig):
    node, t = rig
    old = image_msg(photo(160, 120), "rgb8", _now(t, age=5.0), frame_id="old")
    for _ in range(3):
        t.pub.publish(old)
        time.sleep(0.3)
    wait_for(lambda: int(diagnostics_value(t.messages("/diagnostics"), "dropped_stale") or 0) >= 1, 10,
             "dropped_stale in /diagnostics")
    assert not [m for m in t.messages("lseg/mask") if m.header.frame_id == "old"]
    _good_frame_is_processed(t)


def test_compressed_input_and_corrupt_data(rig):
    from sensor_msgs.msg import CompressedImage

    node, t = rig
    assert t.set_params("lseg_node", input_transport="compressed")[0].successful
    try:
        wait_for(lambda: t.cpub.get_subscription_count() > 0, 20, "node subscribed to image/compressed")
        junk = CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 definitely not a jpeg" * 50)
        junk.header.stamp = _now(t)
        t.cpub.publish(junk)
        wait_for(lambda: "corrupt or unsupported compressed image" in node.log(), 20, "corrupt-data error")
        ok, jpg = cv2.imencode(".jpg", photo(200, 150)[:, :, ::-1])
        good = CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpg.tobytes())
        good.header.stamp, good.header.frame_id = _now(t), "jpeg_cam"
        mask = _good_frame_is_processed(t, t.cpub, good)[-1]
        assert (mask.width, mask.height, mask.header.frame_id) == (200, 150, "jpeg_cam")
    finally:
        assert t.set_params("lseg_node", input_transport="raw")[0].successful
    wait_for(lambda: t.pub.get_subscription_count() > 0, 20, "node back on raw image")
    _good_frame_is_processed(t)


def _startup_failures(env, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 100)
    cases = {
        "missing_weights": (("weights:=/nonexistent/demo_e200.ckpt",), "/nonexistent/demo_e200.ckpt"),
        "corrupt_weights": ((f"weights:={corrupt}",), str(corrupt)),
        "bad_labels": (TINY + ("labels:=[cat, Cat]",), "duplicate label"),
        "bad_palette": (TINY + ("palette:=rainbow",), "palette: must be one of"),
        "bad_input_size": (TINY + ("input_size:=480x600",), "multiples of 32"),
        "compile_without_size": (TINY + ("fast_path:=always",), "needs input_size"),
    }
    if not torch.cuda.is_available():
        cases["cuda_missing"] = (("model:=tiny_vit", "device:=cuda"), "CUDA is not available")
    return cases


def test_startup_errors_name_the_problem_and_exit_nonzero(ros_env, tmp_path):
    cases = _startup_failures(ros_env, tmp_path)
    procs = {k: NodeProcess(ros_env, params=p, params_file=False) for k, (p, _) in cases.items()}
    try:
        for k, proc in procs.items():
            wait_for(lambda: proc.proc.poll() is not None, 90, f"{k}: node exit")
            log = proc.log()
            assert proc.proc.returncode != 0, f"{k}: exited 0\n{log}"
            assert cases[k][1] in log, f"{k}: error does not name {cases[k][1]!r}:\n{log}"
            assert "ready:" not in log
    finally:
        for proc in procs.values():
            proc.stop()


def test_namespace_and_remap_move_every_name(ros_env, rig):
    """As `ros2 launch ... namespace:=robot1 image:=/cam/image_raw` does: outputs, service, input move."""
    node0, t = rig
    node = NodeProcess(ros_env, params=TINY, ros_args=("-r", "__ns:=/robot1", "-r", "image:=/cam/image_raw"))
    try:
        node.wait_ready()
        def names():
            topics = {n for n, _ in t.node.get_topic_names_and_types()}
            services = {n for n, _ in t.node.get_service_names_and_types()}
            names.missing = ({"/robot1/lseg/mask", "/robot1/lseg/overlay", "/robot1/lseg/labels",
                              "/robot1/lseg/class_confidences", "/robot1/lseg/confidence", "/cam/image_raw"} - topics) | (
                {"/robot1/set_labels"} - services)
            return not names.missing and t.node.count_subscribers("/cam/image_raw") == 1
        try:
            wait_for(names, 40, "namespaced names")
        except AssertionError:
            raise AssertionError(f"missing {names.missing}; node log:\n{node.log()}") from None
    finally:
        assert node.stop() == 0, node.log()
