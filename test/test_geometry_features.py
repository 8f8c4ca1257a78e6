"""lseg_ros.geometry: dense features and text embeddings <-> the DenseFeatures / LabelMap fields."""
import numpy as np
import pytest

from lseg_ros.geometry import GeometryError, pack_embeddings, pack_features, unpack_embeddings, unpack_features


def features(c=8, h=3, w=4, seed=0):
    f = np.random.default_rng(seed).standard_normal((c, h, w)).astype(np.float32)
    return (f / np.linalg.norm(f, axis=0, keepdims=True)).astype(np.float16)


def test_pack_is_hwc_and_round_trips():
    f = features()
    p = pack_features(f, 16, (48, 60))       # ceil(48/16) = 3, ceil(60/16) = 4
    assert (p.height, p.width, p.channels, p.stride, p.image_height, p.image_width, p.encoding) == \
        (3, 4, 8, 16, 48, 60, "float16")
    assert len(p.data) == 3 * 4 * 8 * 2
    back = unpack_features(p.height, p.width, p.channels, p.encoding, p.data)
    np.testing.assert_array_equal(back, f.transpose(1, 2, 0))
    # cell (i, j)'s vector is contiguous at element (i * width + j) * channels (the .msg's words)
    flat = np.frombuffer(p.data, "<f2")
    i, j = 2, 1
    np.testing.assert_array_equal(flat[(i * 4 + j) * 8:(i * 4 + j + 1) * 8], f[:, i, j])
    assert np.allclose(np.linalg.norm(back.astype(np.float32), axis=2), 1.0, atol=2e-3)
    hwc = pack_features(np.ascontiguousarray(f.transpose(1, 2, 0)), 16, (48, 60), channels_first=False)
    assert hwc == p


def test_pack_refuses_a_wrong_grid():
    with pytest.raises(GeometryError, match=r"grid 3x4 does not match image 48x64 at stride 8 \(expected 6x8\)"):
        pack_features(features(), 8, (48, 64))
    with pytest.raises(GeometryError, match=r"must be \(C, h, w\), got shape \(3, 4\)"):
        pack_features(np.zeros((3, 4), np.float16), 16, (48, 64))
    with pytest.raises(GeometryError, match="stride must be >= 1"):
        pack_features(features(), 0, (48, 64))


def test_unpack_refuses_bad_data():
    with pytest.raises(GeometryError, match="encoding 'float32' is not supported"):
        unpack_features(1, 1, 2, "float32", bytes(8))
    with pytest.raises(GeometryError, match="has 6 bytes, 1x1x4 float16 needs 8"):
        unpack_features(1, 1, 4, "float16", bytes(6))


def test_embeddings_round_trip():
    e = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    dim, flat = pack_embeddings(e)
    assert dim == 5 and flat.shape == (15,) and flat.dtype == np.float32
    np.testing.assert_array_equal(unpack_embeddings(dim, list(flat)), e)
    assert unpack_embeddings(0, []).shape == (0, 0)
    with pytest.raises(GeometryError, match="not a multiple of embedding_dim 4"):
        unpack_embeddings(4, flat)
    with pytest.raises(GeometryError, match=r"must be \(N, D\)"):
        pack_embeddings(e[0])


def test_dense_features_message_round_trip():
    """Filled from pack_features, serialised by rclpy, decoded as the .msg documents."""
    pytest.importorskip("rclpy", reason="rclpy (the ROS 2 wheels in .venv) is not installed")
    from rclpy.serialization import deserialize_message, serialize_message

    try:
        from lseg_ros.msg import DenseFeatures, LabelMap
    except ImportError as e:
        pytest.skip(f"lseg_ros interfaces not built (scripts/setup.sh): {e}")
    f = features(c=16, h=2, w=3)
    p = pack_features(f, 2, (4, 5))
    msg = DenseFeatures(label_set_version=7, height=p.height, width=p.width, channels=p.channels,
                        stride=p.stride, image_height=p.image_height, image_width=p.image_width,
                        encoding=p.encoding, data=p.data)
    back = deserialize_message(serialize_message(msg), DenseFeatures)
    got = np.frombuffer(bytes(back.data), "<f2").reshape(back.height, back.width, back.channels)
    np.testing.assert_array_equal(got, f.transpose(1, 2, 0))
    assert (back.stride, back.image_height, back.image_width, back.label_set_version) == (2, 4, 5, 7)
    dim, flat = pack_embeddings(np.eye(3, 4, dtype=np.float32))
    lm = deserialize_message(serialize_message(LabelMap(embedding_dim=dim, embeddings=flat)), LabelMap)
    np.testing.assert_array_equal(unpack_embeddings(lm.embedding_dim, lm.embeddings), np.eye(3, 4))


def test_packs_the_model_librarys_features():
    """Prediction.features of the tiny model (the contract: (C, ceil(H/s), ceil(W/s)) float16, unit
    norm) packs into the documented HWC layout, cell for cell."""
    pytest.importorskip("torch", reason="torch (the model library) is not installed")
    from lseg_ros.model import LSegConfig, LSegNet, Predictor

    pred = Predictor(LSegNet.from_config(LSegConfig.tiny_vit()), device="cpu")
    labels = pred.encode_labels(["wall", "floor"])
    rgb = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    out = pred.predict(rgb, labels, features_stride=16)
    f = out.features
    assert f.dtype == np.float16 and f.shape == (pred.net.config.out_dim, 4, 5)
    np.testing.assert_allclose(np.linalg.norm(f.astype(np.float32), axis=0), 1.0, atol=5e-3)
    p = pack_features(f, 16, rgb.shape[:2])
    back = unpack_features(p.height, p.width, p.channels, p.encoding, p.data)
    np.testing.assert_array_equal(back, f.transpose(1, 2, 0))
    dim, flat = pack_embeddings(labels.embeddings.cpu().numpy())
    assert dim == f.shape[0] and flat.size == 2 * dim
