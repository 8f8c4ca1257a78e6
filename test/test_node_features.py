"""The dense language features out of lseg_node, over DDS: lseg/features decodes to the grid and the
values that the model library returns for the same frame, the label map carries the labels' text
embeddings, and encode_texts returns Predictor.encode_labels' embeddings without touching the labels
in force. The node and this test load the same (tiny, untrained) weights file, both in fp32."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ros_harness import NodeProcess, TestNode, image_msg, photo, stamp_key, wait_for

pytestmark = pytest.mark.timeout(240)
LABELS = ["floor", "wall", "person|pedestrian", "other"]


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context, tmp_path_factory):
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.model import LSegConfig, LSegNet, Predictor, save_own
    from lseg_ros.msg import DenseFeatures, LabelMap

    torch.manual_seed(0)
    path = save_own(LSegNet.from_config(LSegConfig.tiny_vit()), tmp_path_factory.mktemp("w") / "tiny.safetensors")
    pred = Predictor(LSegNet.from_checkpoint(path), precision="fp32", max_side=1280)
    node = NodeProcess(ros_env, params=(f"weights:={path}", "device:=cpu", "precision:=fp32", "num_threads:=1",
                                        "labels:=[" + ", ".join(LABELS) + "]"), params_file=False)
    t = TestNode(rclpy_context)
    try:
        node.wait_ready()
        t.subscribe("lseg/features", DenseFeatures)
        t.subscribe("lseg/labels", LabelMap, QoSProfile(depth=5, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        t.pub = t.node.create_publisher(Image, "image", 5)
        wait_for(lambda: t.pub.get_subscription_count() > 0, 20, "node subscribed")
        yield node, t, pred
    finally:
        t.close()
        assert node.stop() == 0, node.log()


def test_features_match_the_model_library(rig):
    from lseg_ros.geometry.features import unpack_features

    node, t, pred = rig
    image = photo(200, 150)
    msg = image_msg(image, "rgb8", t.node.get_clock().now().to_msg())
    got = wait_for(lambda: t.pub.publish(msg) or [m for m in t.messages("lseg/features")
                                                  if stamp_key(m) == stamp_key(msg)], 30, "features", period=0.3)[-1]
    assert (got.height, got.width, got.stride, got.image_height, got.image_width) == (
        math.ceil(150 / 16), math.ceil(200 / 16), 16, 150, 200)
    assert got.header.frame_id == msg.header.frame_id and got.encoding == "float16"
    feats = unpack_features(got.height, got.width, got.channels, got.encoding, got.data).astype(np.float32)
    want = pred.predict(image, pred.encode_labels(LABELS), features_stride=16).features
    want = np.asarray(want, np.float32).transpose(1, 2, 0)
    assert feats.shape == want.shape == (10, 13, 32)
    np.testing.assert_allclose(feats, want, atol=3e-3)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=2), 1.0, atol=5e-3)


def test_label_map_carries_the_text_embeddings(rig):
    from lseg_ros.geometry.features import unpack_embeddings

    node, t, pred = rig
    lm = wait_for(lambda: t.messages("lseg/labels"), 20, "label map")[-1]
    emb = unpack_embeddings(lm.embedding_dim, lm.embeddings)
    np.testing.assert_allclose(emb, pred.encode_labels(LABELS).embeddings.numpy(), atol=1e-5)


def test_encode_texts_matches_the_library_and_keeps_the_labels(rig):
    from lseg_ros.srv import EncodeTexts

    node, t, pred = rig
    version = wait_for(lambda: t.messages("lseg/labels"), 20, "label map")[-1].version
    texts = ["door handle", "grass|lawn", "furry"]
    ans = t.call(EncodeTexts, "/encode_texts", EncodeTexts.Request(texts=texts))
    assert ans.success, ans.message
    assert ans.dim == 32 and list(ans.names) == ["door handle", "grass", "furry"]
    got = np.asarray(ans.embeddings, np.float32).reshape(3, 32)
    np.testing.assert_allclose(got, pred.encode_labels(texts).embeddings.numpy(), atol=1e-5)
    bad = t.call(EncodeTexts, "/encode_texts", EncodeTexts.Request(texts=[]))
    assert not bad.success and "empty" in bad.message and bad.dim == 0
    bad = t.call(EncodeTexts, "/encode_texts", EncodeTexts.Request(texts=["word " * 80]))
    assert not bad.success and "token" in bad.message
    assert t.messages("lseg/labels")[-1].version == version  # the labels in force did not change
