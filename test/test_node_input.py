"""The node's pulled camera input (cameras.FrameSource over real DDS): the executor never runs the
image subscription's callback, the worker takes the newest frame of each camera, and the camera's
sequence numbers count the frames it sent since the first one taken, including the ones replaced
before the worker took one."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from ros_harness import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def rig(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.node.cameras import FrameSource, PulledGroup

    node = rclpy.create_node("input_test", context=rclpy_context)
    called = []
    cams, pubs = [], []
    group = PulledGroup()
    for i, topic in enumerate(("cam_a/image", "cam_b/image")):
        sub = node.create_subscription(Image, topic, called.append, QoSProfile(depth=2), callback_group=group)
        cams.append(SimpleNamespace(spec=SimpleNamespace(index=i), sub=sub))
        pubs.append(node.create_publisher(Image, topic, QoSProfile(depth=50)))
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    for pub in pubs:
        wait_for(lambda: pub.get_subscription_count() > 0, 20, "subscribed")
    source = FrameSource(2, rclpy_context)
    try:
        yield SimpleNamespace(node=node, cams=cams, pubs=pubs, ex=ex, source=source, called=called)
    finally:
        ex.shutdown()
        node.destroy_node()


def _send(pub, tag: str, n: int) -> None:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    for k in range(n):
        pub.publish(Image(header=Header(frame_id=f"{tag}{k}"), height=1, width=1, encoding="rgb8", step=3,
                          data=[1, 2, 3]))
        time.sleep(0.01)


def test_newest_frame_taken_and_every_sent_frame_counted(rig):
    _send(rig.pubs[0], "a", 5)
    time.sleep(0.5)
    for _ in range(20):  # the executor runs, but never the pulled subscription's callback
        rig.ex.spin_once(timeout_sec=0.01)
    assert rig.called == []
    got = rig.source.take_newest(rig.cams, timeout=2.0)
    assert list(got) == [0]
    msg, transport, _ = got[0]
    assert (msg.header.frame_id, transport) == ("a4", "raw")
    st = rig.source.stats[0]
    # first sight of this camera: the frames taken (both of the depth-2 history), not its whole past
    assert (st.received, st.dropped_overwritten) == (2, 1)
    assert rig.source.take_newest(rig.cams, timeout=0.2) == {}

    _send(rig.pubs[0], "a", 3)
    _send(rig.pubs[1], "b", 2)
    time.sleep(0.5)
    got = rig.source.take_newest(rig.cams, timeout=2.0)
    if len(got) < 2:  # the second camera's frame arrived after the wait returned
        got.update(rig.source.take_newest(rig.cams, timeout=2.0))
    assert {i: m.header.frame_id for i, (m, _, _) in got.items()} == {0: "a2", 1: "b1"}
    # camera a: sequence numbers 5 -> 8, three more sent, two of them replaced before the take
    assert [(s.received, s.dropped_overwritten) for s in rig.source.stats] == [(5, 3), (2, 1)]


def test_wait_returns_when_a_frame_arrives(rig):
    t0 = time.monotonic()
    assert rig.source.take_newest(rig.cams, timeout=0.3) == {}
    assert 0.25 < time.monotonic() - t0 < 2.0
    _send(rig.pubs[1], "b", 1)
    got = rig.source.take_newest(rig.cams, timeout=5.0)
    assert list(got) == [1]


def test_closed_subscription_is_skipped(rig):
    rig.node.destroy_subscription(rig.cams[0].sub)
    rig.cams[0].sub = None
    _send(rig.pubs[1], "b", 1)
    got = rig.source.take_newest(rig.cams, timeout=5.0)
    assert list(got) == [1]
