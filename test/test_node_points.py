"""The semantic point cloud from lseg_node over DDS, on a synthetic RGB-D scene with known intrinsics:
two planes (1 m on the left half, 2.5 m on the right) seen by a 160x120 pinhole camera. Every point
lies where the pinhole model puts it, carries the mask's label and the image's colour, and arrives
with the colour frame's header; decimation, 16UC1 millimetres, a lower-resolution depth image and
the bad inputs (non-metric encoding, zero focal length, depth that never comes) behave as documented
while the 2D outputs go on."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ros_harness import TINY, NodeProcess, TestNode, image_msg, photo, stamp_key, wait_for

pytestmark = pytest.mark.timeout(240)
W, H, FX, FY, CX, CY = 160, 120, 100.0, 110.0, 79.5, 59.5


def _planes(w=W, h=H) -> np.ndarray:
    z = np.full((h, w), 2.5, np.float32)
    z[:, : w // 2] = 1.0
    return z


def _info(stamp, fx=FX):
    from sensor_msgs.msg import CameraInfo
    return CameraInfo(header=image_msg(np.zeros((1, 1), np.uint8), "mono8", stamp).header, width=W, height=H,
                      k=[fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0], distortion_model="plumb_bob", d=[0.0] * 5)


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    node = NodeProcess(ros_env, params=TINY + ("depth_topics:=[depth]", "diagnostics_period:=0.5",
                                               "min_confidence:=0.0"))
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        for topic, typ in (("lseg/points", PointCloud2), ("lseg/mask", Image), ("/diagnostics", DiagnosticArray)):
            t.subscribe(topic, typ)
        t.img = t.node.create_publisher(Image, "image", 5)
        t.depth = t.node.create_publisher(Image, "depth", 5)
        t.info = t.node.create_publisher(CameraInfo, "camera_info", 5)
        wait_for(lambda: t.img.get_subscription_count() > 0 and t.depth.get_subscription_count() > 0
                 and t.info.get_subscription_count() > 0, 20, "node subscribed to image, depth, camera_info")
        yield node, t
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def _send(t, depth_img=None, encoding="32FC1", fx=FX, want="lseg/points", send_depth=True, timeout=30.0):
    """Camera info, depth and colour with one stamp, re-sent until `want` has a message with that stamp."""
    stamp = t.node.get_clock().now().to_msg()
    rgb = photo(W, H)
    color = image_msg(rgb, "rgb8", stamp, frame_id="rgbd_color_optical")
    depth = image_msg(_planes() if depth_img is None else depth_img, encoding, stamp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t.info.publish(_info(stamp, fx))
        if send_depth:
            t.depth.publish(depth)
        time.sleep(0.05)
        t.img.publish(color)
        try:
            got = wait_for(lambda: [m for m in t.messages(want) if stamp_key(m) == stamp_key(color)], 1.0, want)
            mask = wait_for(lambda: [m for m in t.messages("lseg/mask") if stamp_key(m) == stamp_key(color)], 5, "mask")
            return got[-1], mask[-1], rgb, color
        except AssertionError:
            continue
    raise AssertionError(f"nothing on {want}")


def _points(cloud) -> np.ndarray:
    from lseg_ros.geometry import cloud_array
    fields = [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields]
    return cloud_array(fields, cloud.point_step, bytes(cloud.data), cloud.is_bigendian)


def test_points_lie_where_the_pinhole_model_puts_them(rig):
    node, t = rig
    cloud, mask, rgb, color = _send(t)
    assert cloud.header.frame_id == "rgbd_color_optical" and stamp_key(cloud) == stamp_key(color)
    p = _points(cloud)
    assert len(p) == W * H and cloud.is_dense
    v, u = np.divmod(np.arange(W * H), W)
    z = np.where(u < W // 2, 1.0, 2.5)
    np.testing.assert_allclose(p["z"], z, rtol=1e-6)
    np.testing.assert_allclose(p["x"], (u - CX) * z / FX, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["y"], (v - CY) * z / FY, rtol=1e-5, atol=1e-6)
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(H, mask.step)[:, :W].reshape(-1)
    np.testing.assert_array_equal(p["label"], ids)
    rgbi = p["rgb"].view(np.uint32)
    np.testing.assert_array_equal(np.stack([(rgbi >> 16) & 255, (rgbi >> 8) & 255, rgbi & 255], 1),
                                  rgb.reshape(-1, 3))
    assert np.all((p["confidence"] > 0) & (p["confidence"] <= 1))


def test_decimation_millimetres_and_lower_resolution_depth(rig):
    node, t = rig
    assert t.set_params("lseg_node", points_decimation=2)[0].successful
    try:
        mm = (_planes() * 1000).astype(np.uint16)
        cloud, *_ = _send(t, mm, "16UC1")
        p = _points(cloud)
        assert len(p) == (W // 2) * (H // 2)
        assert set(np.round(p["z"], 4)) == {1.0, 2.5}
        half = _planes(W // 2, H // 2)  # same geometry, half the resolution: nearest neighbour
        cloud, *_ = _send(t, half)
        p = _points(cloud)
        assert len(p) == (W // 2) * (H // 2) and set(np.round(p["z"], 4)) == {1.0, 2.5}
    finally:
        assert t.set_params("lseg_node", points_decimation=1)[0].successful


def _diag(t, key):
    for arr in reversed(t.messages("/diagnostics")):
        for st in arr.status:
            if st.name.startswith("lseg_node: camera"):
                for kv in st.values:
                    if kv.key == key:
                        return kv.value
    return None


@pytest.mark.parametrize("case, why", [("mono8", "mono8"), ("zero_focal", "focal"), ("no_depth", "no depth frame")])
def test_bad_depth_inputs_keep_the_2d_outputs_and_say_why(rig, case, why):
    node, t = rig
    kwargs = {"mono8": dict(depth_img=np.full((H, W), 9, np.uint8), encoding="mono8"),
              "zero_focal": dict(fx=0.0), "no_depth": dict(send_depth=False)}[case]
    _send(t, want="lseg/mask", **kwargs)  # the mask still comes
    wait_for(lambda: why in (_diag(t, "points_problem") or ""), 10, f"diagnostics naming {why!r}")
    cloud, *_ = _send(t)  # and a good frame gets its cloud again
    assert len(_points(cloud)) == W * H
