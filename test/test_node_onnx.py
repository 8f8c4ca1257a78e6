"""lseg_node with `backend: onnxruntime` over DDS: two node processes on the same weights, one on each
backend (torch in fp32, onnxruntime's CPU provider on the exported tiny ViT), both with two cameras, fed
the same frames; masks compared for one camera alone and for both cameras in one batch. The provider in
use in /diagnostics; vision_msgs/LabelInfo on lseg/label_info (when vision_msgs is built); configure
refused, the node left unconfigured with nothing loaded, for a file that is not ONNX, another
architecture, another input size, an unknown provider and an engine cache directory that cannot be written.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from ros_harness import NodeProcess, TestNode, image_msg, photo, stamp_key, wait_for

pytestmark = pytest.mark.timeout(600)

LABELS = ["person", "table", "chair", "wall", "other"]
CAMS = ("left", "right")
BACKENDS = {"t": "lseg_torch", "o": "lseg_ort"}  # namespace -> node name


def _common(e):
    return ("device:=cpu", "num_threads:=1", f"weights:={e.vit_weights}", "input_size:=96x128",
            "image_topics:=[left/image_raw, right/image_raw]", "labels:=[" + ", ".join(LABELS) + "]",
            "diagnostics_period:=0.5", "max_frame_age:=0.0")


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context, onnx_exports):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    e = onnx_exports
    nodes = {
        "t": NodeProcess(ros_env, params=_common(e) + ("backend:=torch", "precision:=fp32"),
                         ros_args=("-r", "__ns:=/t", "-r", f"__node:={BACKENDS['t']}")),
        "o": NodeProcess(ros_env, params=_common(e) + ("backend:=onnxruntime", f"onnx_model:={e.vit}",
                                                       "providers:=[cpu]"),
                         ros_args=("-r", "__ns:=/o", "-r", f"__node:={BACKENDS['o']}")),
    }
    t = TestNode(rclpy_context)
    try:
        for n in nodes.values():
            n.wait_ready(timeout=120)
        t.pubs = {(ns, cam): t.node.create_publisher(Image, f"/{ns}/{cam}/image_raw", 5) for ns in nodes for cam in CAMS}
        t.subscribe("/diagnostics", DiagnosticArray)
        for (ns, cam), pub in t.pubs.items():
            t.subscribe(f"/{ns}/{cam}/lseg/mask", Image, QoSProfile(depth=50))
            wait_for(lambda: pub.get_subscription_count() > 0, 20, f"node subscribed to /{ns}/{cam}/image_raw")
        yield nodes, t
    finally:
        t.close()
        for n in nodes.values():
            assert n.stop() == 0, n.log()


def _masks(t, cams, timeout=60.0):
    """One frame per camera, the same to both nodes (re-sent until every mask arrived): {(ns, cam): mask}."""
    stamp = t.node.get_clock().now().to_msg()
    frames = {"left": photo(160, 120), "right": photo(120, 90, "astronaut")}
    msgs = {cam: image_msg(frames[cam], "rgb8", stamp) for cam in cams}
    want = [(ns, cam) for ns in BACKENDS for cam in cams]

    def got():
        out = {}
        for ns, cam in want:
            hit = [m for m in t.messages(f"/{ns}/{cam}/lseg/mask") if stamp_key(m) == stamp_key(msgs[cam])]
            if not hit:
                return None
            out[ns, cam] = np.frombuffer(bytes(hit[-1].data), np.uint8).reshape(hit[-1].height, hit[-1].width)
        return out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ns, cam in want:
            t.pubs[ns, cam].publish(msgs[cam])
        try:
            return wait_for(got, 2.0, "masks of both backends")
        except AssertionError:
            continue
    raise AssertionError(f"no masks from both backends for cameras {cams}")


def _diag(t, node_name: str, key: str) -> list:
    """Every value of `key` in the node's /diagnostics status so far, oldest first."""
    return [kv.value for arr in t.messages("/diagnostics") for st in arr.status
            if st.name == f"{node_name}: segmentation" for kv in st.values if kv.key == key]


@pytest.mark.parametrize("cams", [("left",), CAMS], ids=["one camera", "two cameras"])
def test_onnxruntime_masks_equal_torch_masks(rig, cams):
    nodes, t = rig
    masks = _masks(t, cams)
    for cam in cams:
        a, b = masks["t", cam], masks["o", cam]
        assert a.shape == b.shape == {"left": (120, 160), "right": (90, 120)}[cam]
        assert (a == b).mean() >= 0.999, f"{cam}: masks agree on {(a == b).mean():.4f} of the pixels"


def test_both_cameras_share_one_onnxruntime_batch_and_the_provider_is_shown(rig):
    nodes, t = rig
    assert "image path: onnxruntime" in nodes["o"].log() and "CPUExecutionProvider" in nodes["o"].log()
    for _ in range(3):
        _masks(t, CAMS)
    wait_for(lambda: any(float(v or 0) > 1.0 for v in _diag(t, BACKENDS["o"], "batch_size_mean")), 20,
             "a batch of two frames")
    backend = _diag(t, BACKENDS["o"], "backend")[-1]
    assert "onnxruntime" in backend and "CPUExecutionProvider" in backend, backend
    # Both nodes publish on /diagnostics; under load the torch node's may come later (a loaded run had none yet).
    try:
        wait_for(lambda: _diag(t, BACKENDS["t"], "backend"), 20, "the torch node's diagnostics")
    except AssertionError as exc:
        names = sorted({st.name for arr in t.messages("/diagnostics") for st in arr.status})
        raise AssertionError(f"{exc}; statuses received: {names}") from None
    assert _diag(t, BACKENDS["t"], "backend")[-1] == "torch"


def test_label_info_is_published_latched_and_follows_labels_and_threshold(rig):
    if importlib.util.find_spec("vision_msgs") is None:
        pytest.skip("vision_msgs is not installed (scripts/setup.sh builds it from ../shared/vendor/ros2-python)")
    from vision_msgs.msg import LabelInfo

    from lseg_ros.node.qos import latched_profile
    from lseg_ros.srv import SetLabels

    nodes, t = rig
    topic = "/o/lseg/label_info"
    t.subscribe(topic, LabelInfo, latched_profile())  # late subscriber: transient local delivers the last one
    first = wait_for(lambda: t.messages(topic), 20, "the latched LabelInfo")[-1]
    assert [(c.class_id, c.class_name) for c in first.class_map] == [*enumerate(LABELS), (255, "unlabeled")]
    assert first.threshold == 0.0
    ans = t.call(SetLabels, "/o/set_labels", SetLabels.Request(labels=["sky", "tree|bush", "other"]))
    assert ans.success, ans.message
    new = wait_for(lambda: [m for m in t.messages(topic) if len(m.class_map) == 4], 20, "LabelInfo after set_labels")
    assert [c.class_name for c in new[-1].class_map] == ["sky", "tree", "other", "unlabeled"]
    assert t.set_params(f"o/{BACKENDS['o']}", min_confidence=0.25)[0].successful
    wait_for(lambda: any(abs(m.threshold - 0.25) < 1e-6 for m in t.messages(topic)), 20, "threshold = min_confidence")
    assert t.call(SetLabels, "/o/set_labels", SetLabels.Request(labels=LABELS)).success


def test_bad_onnx_settings_fail_configure_and_leave_the_node_unconfigured(ros_env, rclpy_context, onnx_exports,
                                                                          tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    e = onnx_exports
    (tmp_path / "a_file").write_text("")
    node = NodeProcess(ros_env, params=_common(e) + ("autostart:=false", "backend:=onnxruntime",
                                                     f"onnx_model:={e.vit}", "providers:=[cpu]"),
                       ros_args=("-r", "__ns:=/bad"))
    t = TestNode(rclpy_context, "lseg_test_bad")
    cases = [
        ({"onnx_model": str(e.vit_weights)}, "is not an ONNX model"),
        ({"onnx_model": str(e.resnet)}, "another architecture"),
        ({"onnx_model": str(e.vit), "input_size": "64x64"}, "exported for input size 96x128, but input_size is 64x64"),
        ({"input_size": "", "providers": ["cpu", "warp_drive"]}, "'warp_drive' is not an ONNX Runtime execution provider"),
        ({"providers": ["cpu"], "trt_engine_cache": str(tmp_path / "a_file" / "engines")},
         "trt_engine_cache: the TensorRT engine cache directory"),
    ]
    try:
        wait_for(lambda: "lseg_node" in t.node.get_node_names() or node.proc.poll() is not None, 60, "node up")
        assert node.proc.poll() is None, node.log()
        for changes, message in cases:
            assert all(r.successful for r in t.set_params("bad/lseg_node", **changes)), changes
            mark = node.log_size()
            req = ChangeState.Request(transition=Transition(label="configure"))
            assert not t.call(ChangeState, "/bad/lseg_node/change_state", req, timeout=60).success, changes
            log = node.wait_log("configure failed", mark)
            assert message in log and "backend onnxruntime, onnx_model" in log, log
            state = t.call(GetState, "/bad/lseg_node/get_state", GetState.Request()).current_state.label
            assert state == "unconfigured"
            assert t.node.count_publishers("/bad/lseg/labels") == 0  # nothing half-loaded
        t.set_params("bad/lseg_node", trt_engine_cache=str(tmp_path / "engines"))
        req = ChangeState.Request(transition=Transition(label="configure"))
        assert t.call(ChangeState, "/bad/lseg_node/change_state", req, timeout=60).success, node.log()
        assert (tmp_path / "engines").is_dir()
    finally:
        t.close()
        assert node.stop() == 0, node.log()
