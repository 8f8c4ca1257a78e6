"""lseg_node as a managed node, driven through its lifecycle services as a lifecycle manager (or
`ros2 lifecycle set`) drives it: deactivate keeps the model and stops processing, cleanup frees it,
configure + activate serve again with the labels set meanwhile; refused transitions leave the state
as it was; configure-time parameters change only while unconfigured; autostart:=false waits."""
from __future__ import annotations

import pytest

from ros_harness import TINY, NodeProcess, TestNode, image_msg, photo, wait_for

pytestmark = pytest.mark.timeout(240)


def _state(t, node_name="lseg_node") -> str:
    from lifecycle_msgs.srv import GetState
    return t.call(GetState, f"/{node_name}/get_state", GetState.Request()).current_state.label


def _transition(t, label: str, node_name="lseg_node") -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    req = ChangeState.Request(transition=Transition(label=label))
    return t.call(ChangeState, f"/{node_name}/change_state", req, timeout=60).success


def _processed(t, timeout=30.0):
    """Sends one frame until its mask arrives (returns it) or the timeout passes (returns None)."""
    now = t.node.get_clock().now().to_msg()
    msg = image_msg(photo(160, 120), "rgb8", now)
    key = (now.sec, now.nanosec)
    try:
        return wait_for(lambda: t.pub.publish(msg) or [m for m in t.messages("lseg/mask")
                                                         if (m.header.stamp.sec, m.header.stamp.nanosec) == key],
                        timeout, "mask", period=0.3)
    except AssertionError:
        return None


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from sensor_msgs.msg import Image

    node = NodeProcess(ros_env, params=TINY)
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        t.subscribe("lseg/mask", Image)
        t.pub = t.node.create_publisher(Image, "image", 5)
        yield node, t
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def test_autostart_reaches_active_and_processes(rig):
    node, t = rig
    assert _state(t) == "active"
    assert _processed(t) is not None


def test_deactivate_cleanup_configure_activate(rig):
    from lseg_ros.srv import SetLabels

    node, t = rig
    assert _transition(t, "deactivate") and _state(t) == "inactive"
    wait_for(lambda: t.pub.get_subscription_count() == 0, 10, "input unsubscribed while inactive")
    ans = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=["sky", "tree", "other"]))
    assert ans.success and "in force" in ans.message, ans.message  # inactive keeps the model: encoded now
    assert _transition(t, "cleanup") and _state(t) == "unconfigured"
    wait_for(lambda: "model freed" in node.log(), 10, "model freed")
    ans = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=["road", "car|vehicle", "other"]))
    assert ans.success and "encoded at configure" in ans.message and list(ans.labels) == ["road", "car|vehicle", "other"]
    bad = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=["road", "Road"]))
    assert not bad.success and "duplicate" in bad.message and list(bad.labels) == ["road", "car|vehicle", "other"]
    # configure-time parameters may change now (refused while configured: test_node_pipeline)
    assert t.set_params("lseg_node", max_image_pixels=2_000_000, num_threads=1)[0].successful
    assert _transition(t, "configure") and _state(t) == "inactive"
    assert _transition(t, "activate") and _state(t) == "active"
    mask = _processed(t)
    assert mask is not None
    assert t.get_params("lseg_node", "labels")[0] == ["road", "car|vehicle", "other"]


def test_refused_transition_leaves_the_state(rig):
    node, t = rig
    assert _state(t) == "active"
    assert not _transition(t, "configure")  # not a transition out of active
    assert not _transition(t, "no_such_transition")
    assert _state(t) == "active"
    assert _processed(t) is not None


def test_autostart_false_waits_unconfigured_failed_configure_and_unknown_parameter_named(ros_env, rclpy_context):
    t = TestNode(rclpy_context)
    node = NodeProcess(ros_env, params=TINY + ("autostart:=false", "weights:=/nonexistent/w.ckpt", "modle:=vitl16"),
                       ros_args=("-r", "__node:=lseg_manual"))
    try:
        wait_for(lambda: t.node.count_publishers("/diagnostics") > 0 and
                 "lseg_manual" in t.node.get_node_names(), 60, "node up")
        assert _state(t, "lseg_manual") == "unconfigured"
        assert "ignoring unknown parameter(s) modle" in node.log()  # a typo is named, not silently ignored
        assert not _transition(t, "configure", "lseg_manual")
        assert _state(t, "lseg_manual") == "unconfigured"
        assert "/nonexistent/w.ckpt" in node.log()
        assert t.set_params("lseg_manual", weights="")[0].successful
        assert _transition(t, "configure", "lseg_manual") and _state(t, "lseg_manual") == "inactive"
        assert _transition(t, "shutdown", "lseg_manual") and _state(t, "lseg_manual") == "finalized"
    finally:
        t.close()
        assert node.stop() == 0, node.log()
