"""lseg_ros.geometry: pinhole back-projection into the semantic point cloud and its PointCloud2 bytes."""
import struct

import numpy as np
import pytest

from lseg_ros.geometry import (POINT_FIELDS, GeometryError, Intrinsics, cloud_array, decode_depth,
                               semantic_cloud)

H, W = 6, 8
K = Intrinsics.from_k([100.0, 0, 3.5, 0, 50.0, 2.5, 0, 0, 1], W, H)

# The PointCloud2 layout as a consumer would write it by hand from the documented fields.
CONSUMER = np.dtype({"names": ["x", "y", "z", "rgb", "label", "confidence"],
                     "formats": ["<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
                     "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})


def scene(depth=2.0):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.arange(W) * 10          # R encodes u, G encodes v: a point's colour says its pixel
    rgb[..., 1] = (np.arange(H) * 20)[:, None]
    rgb[..., 2] = 7
    labels = ((np.arange(H)[:, None] // 3) * 2 + np.arange(W)[None, :] // 4).astype(np.uint8)
    conf = np.full((H, W), 0.9, np.float32)
    return np.full((H, W), depth, np.float32), rgb, labels, conf


def decode(cloud):
    assert cloud.fields == POINT_FIELDS and cloud.point_step == 24
    assert len(cloud.data) == cloud.height * cloud.row_step == cloud.height * cloud.width * 24
    return np.frombuffer(cloud.data, CONSUMER)


def test_hand_computed_points():
    depth, rgb, labels, conf = scene()
    depth[0, 0], depth[5, 7], depth[2, 3] = 1.0, 4.0, 2.5
    pts = decode(semantic_cloud(depth, K, rgb, labels, conf))
    assert pts.size == H * W
    by_pixel = {((p["rgb"] >> 16) // 10, ((p["rgb"] >> 8) & 0xFF) // 20): p for p in pts}
    # (u, v) -> x = (u - 3.5) z / 100, y = (v - 2.5) z / 50
    for (u, v), (x, y, z) in {(0, 0): (-0.035, -0.05, 1.0), (7, 5): (0.14, 0.2, 4.0),
                              (3, 2): (-0.0125, -0.025, 2.5), (4, 3): (0.01, 0.02, 2.0)}.items():
        p = by_pixel[(u, v)]
        assert (p["x"], p["y"], p["z"]) == pytest.approx((x, y, z), abs=1e-6)
        assert p["label"] == labels[v, u] and p["confidence"] == pytest.approx(0.9)
        assert p["rgb"] == (u * 10 << 16) | (v * 20 << 8) | 7


def test_rgb_is_the_pcl_float_packing():
    depth, rgb, labels, conf = scene()
    rgb[:] = (0x12, 0x34, 0x56)
    c = semantic_cloud(depth, K, rgb, labels, conf)
    packed = struct.unpack_from("<f", c.data, 12)[0]       # the float a PCL reader gets
    assert struct.unpack("<I", struct.pack("<f", packed))[0] == 0x00123456
    assert c.structured()["rgb"][0] == 0x00123456


@pytest.mark.parametrize("z0", [0.5, 3.0])
def test_fronto_parallel_plane(z0):
    depth, rgb, labels, conf = scene(z0)
    pts = decode(semantic_cloud(depth, K, rgb, labels, conf))
    np.testing.assert_allclose(pts["z"], z0)
    # the plane's extent is the image's, scaled by z / f
    assert pts["x"].min() == pytest.approx(-3.5 * z0 / 100) and pts["x"].max() == pytest.approx(3.5 * z0 / 100)
    assert pts["y"].min() == pytest.approx(-2.5 * z0 / 50) and pts["y"].max() == pytest.approx(2.5 * z0 / 50)


def test_tilted_plane_points_lie_on_it():
    """Depth rendered from the plane n . X = d with the same intrinsics comes back on the plane."""
    h, w = 48, 64
    k = Intrinsics.from_k([60.0, 0, 31.5, 0, 55.0, 23.5, 0, 0, 1], w, h)
    n, d = np.array([0.2, -0.4, 1.0]), 3.0
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, float)], -1)
    depth = (d / (rays @ n)).astype(np.float32)
    pts = decode(semantic_cloud(depth, k, np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)))
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1).astype(np.float64)
    np.testing.assert_allclose(xyz @ n, d, rtol=1e-5)
    assert pts.size == h * w and (pts["confidence"] == 1.0).all()


def test_decimation_counts_and_pixels():
    depth, rgb, labels, conf = scene()
    for k, (rows, cols) in {1: (6, 8), 2: (3, 4), 3: (2, 3), 4: (2, 2), 10: (1, 1)}.items():
        c = semantic_cloud(depth, K, rgb, labels, conf, decimation=k)
        pts = decode(c)
        assert (c.height, c.width) == (1, rows * cols), k
        us = sorted({int(p >> 16) // 10 for p in pts["rgb"]})
        assert us == list(range(0, W, k))
        org = semantic_cloud(depth, K, rgb, labels, conf, decimation=k, organized=True)
        assert (org.height, org.width, org.row_step) == (rows, cols, cols * 24)


def test_invalid_depth_skipped():
    depth, rgb, labels, conf = scene()
    bad = {(0, 0): 0.0, (0, 1): np.nan, (0, 2): np.inf, (0, 3): -1.0, (1, 0): 9.0, (1, 1): 0.1}
    for (v, u), z in bad.items():
        depth[v, u] = z
    pts = decode(semantic_cloud(depth, K, rgb, labels, conf, min_range=0.2, max_range=8.0))
    assert pts.size == H * W - len(bad)
    assert np.isfinite(pts["z"]).all() and ((pts["z"] > 0.2) & (pts["z"] <= 8.0)).all()
    kept = {(int(p >> 8 & 0xFF) // 20, int(p >> 16) // 10) for p in pts["rgb"]}
    assert not kept & set(bad)
    # inf is refused even without a max_range; max_range itself is included
    depth2 = scene()[0]
    depth2[0, 0], depth2[0, 1] = np.inf, 8.0
    assert decode(semantic_cloud(depth2, K, rgb, labels, conf)).size == H * W - 1
    assert decode(semantic_cloud(depth2, K, rgb, labels, conf, max_range=8.0)).size == H * W - 1


def test_organized_cloud_keeps_the_grid_with_nan():
    depth, rgb, labels, conf = scene()
    depth[2, 5] = 0.0
    c = semantic_cloud(depth, K, rgb, labels, conf, organized=True)
    assert (c.height, c.width, c.is_dense) == (H, W, False)
    pts = decode(c).reshape(H, W)
    assert np.isnan(pts[2, 5]["x"]) and np.isnan(pts[2, 5]["z"])
    assert np.isfinite(np.delete(pts["z"].ravel(), 2 * W + 5)).all()
    assert pts[3, 4]["x"] == pytest.approx(0.01) and pts[3, 4]["label"] == labels[3, 4]


def test_16uc1_and_32fc1_give_the_same_cloud():
    _, rgb, labels, conf = scene()
    mm = (np.arange(H * W).reshape(H, W) * 37 + 400).astype(np.uint16)
    a = semantic_cloud(decode_depth("16UC1", H, W, 2 * W, False, mm.tobytes()), K, rgb, labels, conf)
    b = semantic_cloud(decode_depth("32FC1", H, W, 4 * W, False, (mm / 1000).astype(np.float32).tobytes()),
                       K, rgb, labels, conf)
    pa, pb = decode(a), decode(b)
    for f in ("x", "y", "z", "confidence"):
        np.testing.assert_allclose(pa[f], pb[f], rtol=1e-6)
    np.testing.assert_array_equal(pa["label"], pb["label"])


def test_low_confidence_kept_unlabeled_or_dropped():
    depth, rgb, labels, conf = scene()
    conf[:, :2] = 0.2                                        # the two left columns are unsure
    keep = decode(semantic_cloud(depth, K, rgb, labels, conf, min_confidence=0.5, unlabeled_id=255))
    assert keep.size == H * W
    left = (keep["rgb"] >> 16) // 10 < 2
    assert (keep["label"][left] == 255).all() and (keep["label"][~left] < 255).all()
    drop = decode(semantic_cloud(depth, K, rgb, labels, conf, min_confidence=0.5, unlabeled_id=255,
                                 drop_unlabeled=True))
    assert drop.size == H * (W - 2) and ((drop["rgb"] >> 16) // 10 >= 2).all()
    # the published mask (unlabeled already set) with min_confidence 0 gives the same points
    mask = np.where(conf < 0.5, np.uint16(65535), labels.astype(np.uint16))
    same = decode(semantic_cloud(depth, K, rgb, mask, conf, unlabeled_id=65535, drop_unlabeled=True))
    np.testing.assert_array_equal(same["label"], drop["label"])


def test_depth_of_half_size_is_sampled_nearest():
    depth, rgb, labels, conf = scene()
    small = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [0.0, 1.5, 2.5, 3.5]], np.float32)
    pts = decode(semantic_cloud(small, K, rgb, labels, conf, organized=True)).reshape(H, W)
    np.testing.assert_array_equal(np.nan_to_num(pts["z"]), np.repeat(np.repeat(small, 2, 0), 2, 1))
    with pytest.raises(GeometryError, match="not aligned"):
        semantic_cloud(np.ones((6, 6), np.float32), K, rgb, labels, conf)


def test_round_trip_through_cloud_array():
    depth, rgb, labels, conf = scene()
    c = semantic_cloud(depth, K, rgb, labels, conf, decimation=2)
    back = cloud_array(c.fields, c.point_step, c.data)
    np.testing.assert_array_equal(back, c.structured())
    for f in CONSUMER.names:
        np.testing.assert_array_equal(back[f], decode(c)[f])
    as_float = cloud_array(c.fields, c.point_step, c.data, rgb_as_uint32=False)
    assert as_float.dtype["rgb"] == np.dtype("<f4")
    with pytest.raises(GeometryError, match="not a multiple of point_step 24"):
        cloud_array(c.fields, 24, c.data[:-1])


def test_bad_inputs_raise_clearly():
    depth, rgb, labels, conf = scene()
    with pytest.raises(GeometryError, match=r"need rgb \(H, W, 3\) uint8"):
        semantic_cloud(depth, K, rgb[..., :2], labels, conf)
    with pytest.raises(GeometryError, match="need rgb"):
        semantic_cloud(depth, K, rgb.astype(np.float32), labels, conf)
    with pytest.raises(GeometryError, match=r"confidence \(6, 7\) does not match labels \(6, 8\)"):
        semantic_cloud(depth, K, rgb, labels, conf[:, :7])
    with pytest.raises(GeometryError, match="intrinsics are for 8x6, the image is 4x3"):
        semantic_cloud(depth[:3, :4], K, rgb[:3, :4], labels[:3, :4], conf[:3, :4])
    with pytest.raises(GeometryError, match="min_range < max_range"):
        semantic_cloud(depth, K, rgb, labels, conf, min_range=3.0, max_range=2.0)
    with pytest.raises(GeometryError, match="decimation must be >= 1"):
        semantic_cloud(depth, K, rgb, labels, conf, decimation=0)
    with pytest.raises(GeometryError, match=r"depth must be \(H, W\)"):
        semantic_cloud(depth[..., None], K, rgb, labels, conf)


def test_pointcloud2_message_round_trip():
    """The node's few lines: fill sensor_msgs/PointCloud2, serialise, read it back by its fields."""
    pytest.importorskip("rclpy", reason="rclpy (the ROS 2 wheels in .venv) is not installed")
    import array

    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    depth, rgb, labels, conf = scene()
    depth[0, 0] = 0.0
    c = semantic_cloud(depth, K, rgb, labels, conf)
    data = array.array("B")
    data.frombytes(c.data)
    msg = PointCloud2(header=Header(frame_id="cam_optical"), height=c.height, width=c.width,
                      fields=[PointField(name=n, offset=o, datatype=d, count=k) for n, o, d, k in c.fields],
                      is_bigendian=c.is_bigendian, point_step=c.point_step, row_step=c.row_step,
                      data=data, is_dense=c.is_dense)
    back = deserialize_message(serialize_message(msg), PointCloud2)
    fields = [(f.name, f.offset, f.datatype, f.count) for f in back.fields]
    assert fields == list(POINT_FIELDS) and [f.datatype for f in back.fields] == [7, 7, 7, 7, 6, 7]
    pts = cloud_array(fields, back.point_step, back.data, back.is_bigendian)
    assert pts.size == back.width == H * W - 1 and back.is_dense
    np.testing.assert_array_equal(pts, c.structured())
