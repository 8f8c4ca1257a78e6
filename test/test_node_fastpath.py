"""The node's fast path: which Predictor options `fast_path` and `input_size` give on CUDA and on the
CPU (no GPU needed: a pure function), and a real node on the CPU with `fast_path: always` that compiles
and warms up at configure, then serves frames of another size at their own resolution."""
from __future__ import annotations

import pytest

from ros_harness import TINY, NodeProcess, TestNode, image_msg, photo, stamp_key, wait_for

pytestmark = pytest.mark.timeout(600)


def _cfg(**kw):
    from lseg_ros.node.config import NodeConfig
    return NodeConfig.from_values(kw)


@pytest.mark.parametrize("kw, device, expect", [
    ({}, "cuda", dict(compile=False, cuda_graphs=True, input_size=None, warmup=())),
    ({"input_size": "480x640"}, "cuda:1", dict(compile=True, cuda_graphs=True, input_size=(480, 640), warmup=(1,))),
    ({"input_size": "480x640", "image_topics": ["a/image", "b/image", "c/image"]}, "cuda",
     dict(compile=True, cuda_graphs=True, input_size=(480, 640), warmup=(1, 2, 3))),
    ({"input_size": "480x640"}, "cpu", dict(compile=False, cuda_graphs=False, input_size=(480, 640), warmup=())),
    ({}, "cpu", dict(compile=False, cuda_graphs=False, input_size=None, warmup=())),
    ({"fast_path": "always", "input_size": "96x128"}, "cpu", dict(compile=True, cuda_graphs=False, input_size=(96, 128),
                                                             warmup=(1,))),
    ({"fast_path": "eager", "input_size": "480x640"}, "cuda", dict(compile=False, cuda_graphs=False,
                                                                 input_size=(480, 640), warmup=())),
])
def test_fast_path_options(kw, device, expect):
    from dataclasses import asdict
    from lseg_ros.node.predictor_setup import fast_path
    assert asdict(fast_path(_cfg(**kw), device)) == expect


def test_fast_path_on_cpu_needs_an_input_size():
    from lseg_ros.node.predictor_setup import StartupError, fast_path
    with pytest.raises(StartupError, match="needs input_size"):
        fast_path(_cfg(fast_path="always"), "cpu")


def test_node_config_is_typed_frozen_and_lists_every_parameter():
    import dataclasses
    from lseg_ros.node import params as P
    from lseg_ros.node.config import NodeConfig
    assert {f.name for f in dataclasses.fields(NodeConfig)} == set(P.BY_NAME)
    cfg = NodeConfig.from_values({"max_frame_age": 0, "labels": ["a", "b|c"]})
    assert cfg.max_frame_age == 0.0 and isinstance(cfg.max_frame_age, float) and cfg.labels == ("a", "b|c")
    assert cfg.model == P.BY_NAME["model"].default and cfg.input_hw is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = "rn101"
    assert cfg.changed(min_confidence=1).min_confidence == 1.0 and cfg.min_confidence == 0.0
    with pytest.raises(ValueError, match="input_size: height and width must be multiples.*palette: must be one of"):
        NodeConfig.from_values({"palette": "rainbow", "input_size": "480x600"})


@pytest.mark.parametrize("text, ok", [("", True), ("480x640", True), (" 96 x 128 ", True), ("480x600", False),
                                      ("480", False), ("16x32", False), ("axb", False)])
def test_input_size_parameter_is_checked(text, ok):
    from lseg_ros.node import params as P
    assert (P.validate("input_size", text) is None) == ok


def test_node_compiles_at_configure_and_serves_other_sizes(ros_env, rclpy_context):
    """fast_path: always, input_size 96x128 (torch.compile on the CPU: about a minute here)."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    node = NodeProcess(ros_env, params=TINY + ("fast_path:=always", "input_size:=96x128"))
    t = TestNode(rclpy_context)
    try:
        node.wait_ready(timeout=540)
        assert "fast path (compile) warmed up at 96x128 for batch sizes [1]" in node.log(), node.log()
        t.subscribe("lseg/mask", Image, QoSProfile(depth=20))
        pub = t.node.create_publisher(Image, "image", 5)
        wait_for(lambda: pub.get_subscription_count() > 0, 20, "node subscribed")
        msg = image_msg(photo(160, 120), "rgb8", t.node.get_clock().now().to_msg())

        def masked():
            pub.publish(msg)
            return [m for m in t.messages("lseg/mask") if stamp_key(m) == stamp_key(msg)]
        (mask, *_) = wait_for(masked, 120, "mask of a 160x120 frame", period=1.0)
        assert (mask.width, mask.height) == (160, 120)
        assert "inference failed" not in node.log()
    finally:
        t.close()
        assert node.stop() == 0, node.log()
