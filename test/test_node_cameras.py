"""Several cameras in one lseg_node: each camera's newest frame goes through ONE batched forward,
results come back at each camera's resolution with its own header, under names beside its image
topic; a camera publishing far faster than the others does not starve them; one camera per
namespace (a clash is refused at configure, naming both topics)."""
from __future__ import annotations

import threading
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ros_harness import TINY, NodeProcess, TestNode, diagnostics_value, image_msg, photo, stamp_key, wait_for

pytestmark = pytest.mark.timeout(300)

CAMS = {"/front/image_raw": (320, 240), "/left/image_raw": (160, 120), "/rear/image_raw": (200, 150)}


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences

    topics = "[" + ", ".join(CAMS) + "]"
    node = NodeProcess(ros_env, params=TINY + (f"image_topics:={topics}", "diagnostics_period:=0.5"))
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        t.pubs = {}
        for topic in CAMS:
            ns = topic.rsplit("/", 1)[0]
            t.subscribe(f"{ns}/lseg/mask", Image, QoSProfile(depth=200))
            t.subscribe(f"{ns}/lseg/class_confidences", ClassConfidences, QoSProfile(depth=200))
            t.pubs[topic] = t.node.create_publisher(Image, topic, 10)
        t.subscribe("/diagnostics", DiagnosticArray)
        for topic, pub in t.pubs.items():
            wait_for(lambda: pub.get_subscription_count() > 0, 20, f"node subscribed to {topic}")
        yield node, t
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def _send_all(t, cams, timeout=30.0):
    """Publishes one frame per camera (same stamp, own frame_id and size), re-sent until every camera's
    mask for it arrived; returns {topic: mask}."""
    stamp = t.node.get_clock().now().to_msg()
    msgs = {c: image_msg(photo(*CAMS[c]), "rgb8", stamp, frame_id=c.strip("/").split("/")[0] + "_optical")
            for c in cams}

    def got():
        out = {}
        for c in cams:
            hit = [m for m in t.messages(c.rsplit("/", 1)[0] + "/lseg/mask") if stamp_key(m) == stamp_key(msgs[c])]
            if not hit:
                return None
            out[c] = hit[-1]
        return out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in cams:
            t.pubs[c].publish(msgs[c])
        try:
            return wait_for(got, 1.0, "masks")
        except AssertionError:
            continue
    raise AssertionError(f"no masks from every camera of {cams}")


@pytest.mark.parametrize("cams", [list(CAMS)[:2], list(CAMS)])
def test_each_camera_gets_its_own_outputs_at_its_size(rig, cams):
    node, t = rig
    masks = _send_all(t, cams)
    for c, m in masks.items():
        assert (m.width, m.height) == CAMS[c]
        assert m.header.frame_id == c.strip("/").split("/")[0] + "_optical"
        assert m.encoding == "mono8" and max(bytes(m.data)) < 4


def test_ready_cameras_share_one_forward(rig):
    node, t = rig
    for _ in range(3):
        _send_all(t, list(CAMS))
    msgs = wait_for(lambda: [m for m in t.messages("/diagnostics")
                             if (diagnostics_value([m], "batch_size_mean") or "0") not in ("", "0", "1.00")], 20,
                    "a batch of more than one frame")
    assert float(diagnostics_value(msgs, "batch_size_mean")) > 1.0
    cams = {st.name for arr in t.messages("/diagnostics") for st in arr.status if "camera" in st.name}
    assert {f"lseg_node: camera {c}" for c in CAMS} <= cams


def test_a_flooding_camera_does_not_starve_the_others(rig):
    """front floods at ~100 Hz; left and rear send a frame every 0.5 s: each of theirs is processed."""
    node, t = rig
    stop = threading.Event()
    flood = image_msg(photo(*CAMS["/front/image_raw"]), "rgb8", t.node.get_clock().now().to_msg())

    def flooder():
        while not stop.is_set():
            flood.header.stamp = t.node.get_clock().now().to_msg()
            t.pubs["/front/image_raw"].publish(flood)
            time.sleep(0.01)
    th = threading.Thread(target=flooder, daemon=True)
    th.start()
    try:
        sent = {"/left/image_raw": [], "/rear/image_raw": []}
        for _ in range(6):
            for c in sent:
                stamp = t.node.get_clock().now().to_msg()
                t.pubs[c].publish(image_msg(photo(*CAMS[c]), "rgb8", stamp))
                sent[c].append((stamp.sec, stamp.nanosec))
            time.sleep(0.5)
    finally:
        stop.set()
        th.join()
    for c, keys in sent.items():
        topic = c.rsplit("/", 1)[0] + "/lseg/mask"
        wait_for(lambda: set(keys) <= {stamp_key(m) for m in t.messages(topic)}, 30,
                 f"every frame of {c} processed while front floods")
    assert len([m for m in t.messages("/front/lseg/mask")]) > 0


def test_pipelined_worker_keeps_order_and_label_versions_under_label_changes(rig):
    """Two cameras at 30 Hz while the labels change every 0.3 s: per camera, outputs come in the order of
    their frames and no frame is published twice; every frame's class_confidences names are its label
    map's, and its mask was made with that label set (its id histogram is the published pixel_fraction)."""
    import numpy as np
    from lseg_ros.msg import LabelMap
    from lseg_ros.srv import SetLabels

    node, t = rig
    cams = list(CAMS)[:2]
    t.subscribe("lseg/labels", LabelMap, QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                                       reliability=ReliabilityPolicy.RELIABLE))
    t.clear()
    stop = threading.Event()
    frames = {c: image_msg(photo(*CAMS[c]), "rgb8", t.node.get_clock().now().to_msg()) for c in cams}

    def stream():
        while not stop.is_set():
            stamp = t.node.get_clock().now().to_msg()
            for c in cams:
                frames[c].header.stamp = stamp
                t.pubs[c].publish(frames[c])
            time.sleep(1 / 30)
    th = threading.Thread(target=stream, daemon=True)
    th.start()
    sets = [["sky", "grass|lawn", "road"], ["person", "chair", "table", "floor", "wall", "other"], ["cat", "dog"]]
    try:
        for k in range(12):
            ans = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=sets[k % 3]))
            assert ans.success, ans.message
            time.sleep(0.3)
        time.sleep(1.0)
    finally:
        stop.set()
        th.join()
    time.sleep(1.0)  # the batches in flight
    maps = {m.version: [e.name for e in m.entries] for m in t.messages("lseg/labels")}
    versions = set()
    for c in cams:
        ns = c.rsplit("/", 1)[0]
        scores, masks = t.messages(f"{ns}/lseg/class_confidences"), t.messages(f"{ns}/lseg/mask")
        assert len(scores) > 10, f"{c}: only {len(scores)} frames out"
        for topic, msgs in (("class_confidences", scores), ("mask", masks)):
            keys = [stamp_key(m) for m in msgs]
            assert len(set(keys)) == len(keys), f"{c} {topic}: a frame published twice"
            assert keys == sorted(keys), f"{c} {topic}: outputs out of frame order"
        by_stamp = {stamp_key(m): m for m in masks}
        for s in scores:
            versions.add(s.label_set_version)
            assert maps[s.label_set_version] == list(s.labels), f"{c}: names differ from the label map"
            m = by_stamp.get(stamp_key(s))
            if m is not None:
                ids = np.frombuffer(bytes(m.data), np.uint8)
                np.testing.assert_allclose(np.bincount(ids, minlength=len(s.labels)) / ids.size, s.pixel_fraction,
                                           atol=1e-6, err_msg=f"{c}: mask and class_confidences of different sets")
    assert len(versions) >= 4, f"frames saw only label versions {sorted(versions)}"


def test_two_cameras_in_one_namespace_are_refused(ros_env):
    node = NodeProcess(ros_env, params=TINY + ("image_topics:=[/cam/left, /cam/right]",), params_file=False,
                       ros_args=("-r", "__node:=lseg_clash"))
    try:
        wait_for(lambda: node.proc.poll() is not None, 60, "node exit")
        log = node.log()
        assert node.proc.returncode == 1, log
        assert "'/cam/left' and '/cam/right' are in the same namespace" in log, log
    finally:
        node.stop()
