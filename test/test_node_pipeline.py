"""lseg_node end to end over DDS: a real node process (tiny model, config/lseg.yaml), this test's rclpy
node publishing real photos and reading every output, set_labels and the labels parameter.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ros_harness import PARAMS_FILE, NodeProcess, TestNode, diagnostics_value, image_msg, photo, wait_for

pytestmark = pytest.mark.timeout(240)

OUT = ("lseg/mask", "lseg/overlay", "lseg/confidence", "lseg/heatmap/person")


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences, LabelMap

    node = NodeProcess(ros_env)  # params file + tiny model; heatmap_labels: [person] from the file
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        for topic in OUT:
            t.subscribe(topic, Image)
        t.subscribe("lseg/class_confidences", ClassConfidences, QoSProfile(depth=50))
        # a late, transient-local subscriber still gets the label map published at start
        t.subscribe("lseg/labels", LabelMap, QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        t.subscribe("/diagnostics", DiagnosticArray, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        t.pub = t.node.create_publisher(Image, "image", 5)
        wait_for(lambda: t.pub.get_subscription_count() > 0, 20, "node subscribed to image")
        yield node, t
    finally:
        t.close()
        rc = node.stop()
        assert rc == 0, f"lseg_node did not shut down cleanly (rc {rc}):\n{node.log()}"


def _stamp(t, offset_ns: int = 0):
    now = t.node.get_clock().now().to_msg()
    now.nanosec = (now.nanosec + offset_ns) % 1_000_000_000
    return now


def _send_until(t, msg, topics, timeout=30.0):
    """Publishes msg (re-sending every 0.5 s) until each topic got a message with msg's stamp."""
    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def found():
        out = {}
        for topic in topics:
            hit = [m for m in t.messages(topic) if (m.header.stamp.sec, m.header.stamp.nanosec) == key]
            if not hit:
                return None
            out[topic] = hit[-1]
        return out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t.pub.publish(msg)
        try:
            return wait_for(found, 0.5, "outputs")
        except AssertionError:
            continue
    raise AssertionError(f"no outputs on {topics} for stamp {key}")


def test_declared_parameters_match_params_file(rig):
    """The node parsed config/lseg.yaml (rcl's parser) and declares every key it sets."""
    import yaml
    from rcl_interfaces.srv import ListParameters

    node, t = rig
    keys = set(yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"])
    res = t.call(ListParameters, "/lseg_node/list_parameters", ListParameters.Request())
    declared = set(res.result.names)
    assert keys <= declared, f"in config/lseg.yaml but not declared by the node: {sorted(keys - declared)}"
    assert t.get_params("lseg_node", "heatmap_labels", "model") == [["person"], "tiny_vit"]


def test_outputs_carry_header_and_input_size(rig):
    from lseg_ros.msg import LabelMap  # noqa: F401

    node, t = rig
    img = photo(640, 480)
    msg = image_msg(img, "rgb8", _stamp(t), frame_id="cam_color_optical_frame")
    got = _send_until(t, msg, OUT + ("lseg/class_confidences",))
    for topic, out in got.items():
        assert out.header.stamp == msg.header.stamp and out.header.frame_id == "cam_color_optical_frame", topic
    mask, overlay, conf, heat = (got[k] for k in OUT)
    assert (mask.encoding, mask.width, mask.height) == ("mono8", 640, 480)
    assert (overlay.encoding, overlay.width, overlay.height, overlay.step) == ("rgb8", 640, 480, 1920)
    assert (conf.encoding, conf.width, conf.height) == ("32FC1", 640, 480)
    assert (heat.encoding, heat.width, heat.height) == ("32FC1", 640, 480)
    ids = np.frombuffer(bytes(mask.data), np.uint8)
    assert ids.size == 640 * 480 and set(np.unique(ids)) <= {0, 1, 2, 3}
    c = np.frombuffer(bytes(conf.data), np.float32)
    assert c.size == 640 * 480 and np.all((c >= 0.25 - 1e-6) & (c <= 1.0 + 1e-6))  # 4 labels: max prob >= 1/4
    scores = got["lseg/class_confidences"]
    assert list(scores.labels) == ["floor", "wall", "person", "other"]
    assert abs(sum(scores.pixel_fraction) - 1.0) < 1e-4 and scores.unlabeled_id == 255
    maps = wait_for(lambda: t.messages("lseg/labels"), 10, "label map (transient local)")
    assert maps[-1].version == scores.label_set_version
    assert [e.name for e in maps[-1].entries] == list(scores.labels)
    assert [e.class_id for e in maps[-1].entries] == [0, 1, 2, 3]


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1"])
def test_input_encodings(rig, encoding):
    node, t = rig
    rgb = photo(320, 240, "astronaut")
    arr = {"bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
           "bgra8": np.dstack([rgb[:, :, ::-1], np.zeros(rgb.shape[:2], np.uint8)]),
           "mono8": rgb[:, :, 1], "mono16": rgb[:, :, 1].astype(np.uint16) * 200,
           "16UC1": rgb[:, :, 0].astype(np.uint16) * 3}[encoding]
    msg = image_msg(np.ascontiguousarray(arr), encoding, _stamp(t), frame_id=f"f_{encoding}")
    mask = _send_until(t, msg, ["lseg/mask"])["lseg/mask"]
    assert (mask.width, mask.height, mask.header.frame_id) == (320, 240, f"f_{encoding}")


def test_set_labels_swaps_atomically_between_frames(rig):
    """While frames stream, flip between two label sets: every frame's names, ids and version agree."""
    from lseg_ros.srv import SetLabels

    node, t = rig
    sets = [["sky", "grass|lawn", "road"], ["person|people", "chair", "table", "floor", "wall", "other"]]
    stop = threading.Event()
    img = photo(320, 240)

    def stream():
        while not stop.is_set():
            t.pub.publish(image_msg(img, "rgb8", _stamp(t)))
            time.sleep(0.05)
    th = threading.Thread(target=stream, daemon=True)
    t.clear()
    th.start()
    try:
        answers = []
        for k in range(6):
            labels = sets[k % 2]
            before = len(t.messages("lseg/class_confidences"))
            answers.append(t.call(SetLabels, "/set_labels", SetLabels.Request(labels=labels)))
            wait_for(lambda: len(t.messages("lseg/class_confidences")) > before + 1, 20, "frames after a swap")
    finally:
        stop.set()
        th.join()
    for k, ans in enumerate(answers):
        assert ans.success and list(ans.labels) == sets[k % 2], ans.message
    maps = {m.version: [e.name for e in m.entries] for m in t.messages("lseg/labels")}
    masks = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in t.messages("lseg/mask")}
    scores = t.messages("lseg/class_confidences")
    seen_names, with_mask = set(), set()
    for s in scores:
        assert maps[s.label_set_version] == list(s.labels), "class_confidences names differ from its label map"
        seen_names.add(tuple(s.labels))
        assert len(s.pixel_fraction) == len(s.labels)
        m = masks.get((s.header.stamp.sec, s.header.stamp.nanosec))
        if m is not None:
            # the mask of this frame was made with this frame's label set: its id histogram is the
            # published pixel_fraction (min_confidence is 0 here), which a mask of the other set can't match
            ids = np.frombuffer(bytes(m.data), np.uint8)
            assert int(ids.max()) < len(s.labels), "mask id beyond the label set"
            np.testing.assert_allclose(np.bincount(ids, minlength=len(s.labels)) / ids.size, s.pixel_fraction,
                                       atol=1e-6, err_msg="mask and class_confidences from different label sets")
            with_mask.add(tuple(s.labels))
    expected = {("sky", "grass", "road"), ("person", "chair", "table", "floor", "wall", "other")}
    assert seen_names >= expected and with_mask >= expected
    assert t.get_params("lseg_node", "labels") == [sets[1]]


@pytest.mark.parametrize("bad, why", [([], "empty"), (["cat", "Cat"], "duplicate"), (["cat", " "], "empty"),
                                      (["dog", "a|"], "empty alternative"), (["x " * 100], "tokens")])
def test_set_labels_refuses_bad_requests(rig, bad, why):
    from lseg_ros.srv import SetLabels

    node, t = rig
    before = t.get_params("lseg_node", "labels")[0]
    ans = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=bad))
    assert not ans.success and why.split()[0] in ans.message, ans.message
    assert list(ans.labels) == before
    assert t.get_params("lseg_node", "labels")[0] == before


def test_labels_parameter_has_the_same_effect(rig):
    node, t = rig
    t.clear()
    res = t.set_params("lseg_node", labels=["floor", "wall", "person", "other"])
    assert res[0].successful, res[0].reason
    img = photo(320, 240)
    scores = _send_until(t, image_msg(img, "rgb8", _stamp(t)), ["lseg/class_confidences"])["lseg/class_confidences"]
    assert list(scores.labels) == ["floor", "wall", "person", "other"]
    assert t.messages("lseg/labels")[-1].version == scores.label_set_version


@pytest.mark.parametrize("name, value, why", [("labels", ["a", "A"], "duplicate"), ("min_confidence", 1.5, "<= 1.0"),
                                              ("palette", "rainbow", "one of"), ("input_reliability", "maybe", "one of"),
                                              ("weights", "/x.ckpt", "read at configure")])
def test_bad_parameter_values_are_rejected_with_a_reason(rig, name, value, why):
    node, t = rig
    res = t.set_params("lseg_node", **{name: value})[0]
    assert not res.successful and why in res.reason, res.reason


def test_min_confidence_marks_unlabeled_pixels(rig):
    node, t = rig
    try:
        assert t.set_params("lseg_node", min_confidence=1.0)[0].successful
        got = _send_until(t, image_msg(photo(320, 240), "rgb8", _stamp(t)), ["lseg/mask", "lseg/class_confidences"])
        ids = np.frombuffer(bytes(got["lseg/mask"].data), np.uint8)
        assert (ids == 255).mean() > 0.99  # no untrained softmax reaches 1.0
        assert got["lseg/class_confidences"].min_confidence == 1.0
    finally:
        assert t.set_params("lseg_node", min_confidence=0.0)[0].successful


def test_diagnostics(rig):
    node, t = rig
    for _ in range(3):
        _send_until(t, image_msg(photo(320, 240), "rgb8", _stamp(t)), ["lseg/mask"])
    msgs = wait_for(lambda: [m for m in t.messages("/diagnostics")
                             if diagnostics_value([m], "frames_processed") not in (None, "0")], 10, "diagnostics")
    for key in ("rate_hz", "latency_ms_mean", "inference_ms_mean", "dropped_overwritten", "dropped_stale", "device"):
        assert diagnostics_value(msgs, key) is not None, key
    assert diagnostics_value(msgs, "device") == "cpu"


def test_more_than_254_labels_give_a_mono16_mask(rig):
    from lseg_ros.srv import SetLabels

    node, t = rig
    many = [f"thing {i}" for i in range(300)]
    try:
        ans = t.call(SetLabels, "/set_labels", SetLabels.Request(labels=many))
        assert ans.success, ans.message
        got = _send_until(t, image_msg(photo(160, 120), "rgb8", _stamp(t)), ["lseg/mask", "lseg/class_confidences"])
        mask, scores = got["lseg/mask"], got["lseg/class_confidences"]
        assert (mask.encoding, mask.step, mask.width, mask.height) == ("mono16", 320, 160, 120)
        ids = np.frombuffer(bytes(mask.data), np.dtype(">u2" if mask.is_bigendian else "<u2"))
        assert ids.max() < 300 and scores.unlabeled_id == 65535 and len(scores.labels) == 300
        assert t.messages("lseg/labels")[-1].unlabeled_id == 65535
    finally:
        assert t.call(SetLabels, "/set_labels", SetLabels.Request(labels=["floor", "wall", "person", "other"])).success
