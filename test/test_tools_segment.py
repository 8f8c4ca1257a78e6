"""lseg-segment: a real bag (sqlite3 and mcap) written, segmented, read back; images; errors."""
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from lseg_ros.tools import bagio, segment  # noqa: E402

LABELS = ["red", "green", "other"]


def fake_predict(rgb, features_stride=None):
    """Deterministic stand-in for the Predictor: class = argmax of (R, G, 60); features (with a
    stride): the unit vector (R, G, B, 1) of each cell's top-left pixel, as float16 (C, h, w)."""
    score = np.stack([rgb[..., 0], rgb[..., 1], np.full(rgb.shape[:2], 60, np.uint8)]).astype(np.float32)
    mask = score.argmax(0).astype(np.int32)
    probs = np.exp(score / 50) / np.exp(score / 50).sum(0)
    conf = probs.max(0)
    n = len(LABELS)
    frac = np.array([(mask == i).mean() for i in range(n)], np.float32)
    mean = np.array([conf[mask == i].mean() if (mask == i).any() else 0 for i in range(n)], np.float32)
    feats = None
    if features_stride:
        cells = np.concatenate([rgb[::features_stride, ::features_stride].astype(np.float32),
                                np.ones(rgb[::features_stride, ::features_stride].shape[:2] + (1,), np.float32)], 2)
        feats = (cells / np.linalg.norm(cells, axis=2, keepdims=True)).transpose(2, 0, 1).astype(np.float16)
    return SimpleNamespace(mask=mask, confidence=conf, pixel_fraction=frac, mean_confidence=mean,
                           max_confidence=probs.reshape(n, -1).max(1), features=feats,
                           labels=SimpleNamespace(names=tuple(LABELS), texts=tuple(LABELS), version=3,
                                                  embeddings=np.eye(3, 4, dtype=np.float32)))


def frame(i, h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : 8 + 4 * i, 0] = 200       # red band grows with i
    img[h // 2:, w // 2:, 1] = 220     # green block
    return img


def write_bag(path, storage, n=3, encoding="rgb8"):
    store = get_typestore(Stores.ROS2_KILTED)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    String = store.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=storage) as w:
        cam = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        other = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(n):
            img = frame(i)
            if encoding == "bgr8":
                img = img[..., ::-1].copy()
            msg = Image(header=Header(stamp=Time(sec=100 + i, nanosec=7), frame_id="cam_optical"),
                        height=img.shape[0], width=img.shape[1], encoding=encoding, is_bigendian=0,
                        step=img.shape[1] * 3, data=img.reshape(-1))
            t = (100 + i) * 10**9
            w.write(cam, t, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            w.write(other, t + 1, store.serialize_cdr(String(data=f"hi {i}"), "std_msgs/msg/String"))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip(tmp_path, storage):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, bagio.storage_plugin(storage), encoding="bgr8" if storage == "mcap" else "rgb8")
    seg = segment.Segmenter(fake_predict, len(LABELS))
    counts = segment.segment_bag(src, dst, ["/cam/image"], seg)
    assert list(counts) == ["/cam/image"] and counts["/cam/image"].frames == 3
    assert counts["/cam/image"].points == 0 and counts["/cam/image"].features == 0   # no depth, no --features
    assert bagio.detect_storage(dst) == storage

    store = bagio.typestore()
    with Reader(dst) as r:
        topics = {c.topic: c for c in r.connections}
        assert set(topics) == {"/cam/image", "/chatter", "/cam/image/lseg/mask",
                               "/cam/image/lseg/overlay", "/cam/image/lseg/class_confidences"}
        assert {t: c.msgcount for t, c in topics.items()} == dict.fromkeys(topics, 3)
        assert topics["/cam/image/lseg/class_confidences"].msgtype == "lseg_ros/msg/ClassConfidences"
        got = {}
        for c, stamp, raw in r.messages():
            got.setdefault(c.topic, []).append((stamp, store.deserialize_cdr(raw, c.msgtype)))
    assert [m.data for _, m in got["/chatter"]] == ["hi 0", "hi 1", "hi 2"]   # originals untouched
    for i in range(3):
        stamp, mask = got["/cam/image/lseg/mask"][i]
        _, ov = got["/cam/image/lseg/overlay"][i]
        _, conf = got["/cam/image/lseg/class_confidences"][i]
        assert stamp == (100 + i) * 10**9
        for m in (mask, ov, conf):
            assert m.header.stamp.sec == 100 + i and m.header.stamp.nanosec == 7
            assert m.header.frame_id == "cam_optical"
        assert (mask.encoding, mask.height, mask.width, mask.step) == ("mono8", 48, 64, 64)
        assert (ov.encoding, ov.height, ov.width, ov.step) == ("rgb8", 48, 64, 192)
        m = np.asarray(mask.data).reshape(48, 64)
        expected = fake_predict(frame(i)).mask
        np.testing.assert_array_equal(m, expected)          # colour order survived bgr8 input
        assert list(conf.labels) == LABELS and conf.label_set_version == 3
        assert conf.unlabeled_id == 255
        np.testing.assert_allclose(conf.pixel_fraction, [(expected == k).mean() for k in range(3)], atol=1e-6)
        assert conf.pixel_fraction.sum() == pytest.approx(1.0)


def test_bag_errors(tmp_path):
    src = tmp_path / "in"
    write_bag(src, StoragePlugin.SQLITE3, n=1)
    seg = segment.Segmenter(fake_predict, 3)
    with pytest.raises(segment.ToolError, match=r"no topic '/nope'.*'/cam/image'"):
        segment.segment_bag(src, tmp_path / "o1", ["/nope"], seg)
    with pytest.raises(segment.ToolError, match="not an image"):
        segment.segment_bag(src, tmp_path / "o2", ["/chatter"], seg)
    with pytest.raises(segment.ToolError, match="exists already"):
        segment.segment_bag(src, src, None, seg)


def test_images_and_skip_bad(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), frame(0)[..., ::-1])
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    seg = segment.Segmenter(fake_predict, 3, min_confidence=0.5)
    paths = sorted(d.iterdir())
    with pytest.raises(segment.ToolError, match="broken.jpg"):
        segment.segment_images(paths, tmp_path / "o", seg)
    done, skipped = segment.segment_images(paths, tmp_path / "o", seg, skip_bad=True)
    assert done == 1 and len(skipped) == 1
    mask = cv2.imread(str(tmp_path / "o" / "a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    scores = json.loads((tmp_path / "o" / "a_scores.json").read_text())
    assert scores["labels"] == LABELS and len(scores["pixel_fraction"]) == 3
    assert (tmp_path / "o" / "a_overlay.png").is_file()


def test_same_stem_inputs_get_distinct_outputs(tmp_path):
    """x.png from three folders (and x.jpg) must not overwrite each other's outputs."""
    paths = []
    for i, (folder, ext) in enumerate([("a", "png"), ("b", "png"), ("c", "png"), ("a", "jpg")]):
        (tmp_path / folder).mkdir(exist_ok=True)
        p = tmp_path / folder / f"x.{ext}"
        cv2.imwrite(str(p), frame(i)[..., ::-1])
        paths.append(p)
    seg = segment.Segmenter(fake_predict, 3, min_confidence=0.5)
    done, _ = segment.segment_images(paths, tmp_path / "o", seg)
    assert done == 4
    outs = sorted((tmp_path / "o").glob("*_scores.json"))
    assert len(outs) == 4
    assert sorted(json.loads(o.read_text())["image"] for o in outs) == sorted(map(str, paths))
    assert len(list((tmp_path / "o").glob("*_mask.png"))) == 4
    assert (tmp_path / "o" / "x_scores.json").is_file()          # the first keeps its plain name


def test_confidences_msg_matches_source_tree():
    from pathlib import Path

    text = bagio.confidences_msg_text()
    src = Path(__file__).resolve().parents[1] / "msg" / "ClassConfidences.msg"
    if src.is_file():
        assert text == src.read_text()
    assert "float32[] pixel_fraction" in text


def test_cli_errors(tmp_path, capsys):
    rc = segment.main([str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o"), "-l", "a,b"])
    assert rc == 2 and "missing.jpg" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"")
    rc = segment.main([str(tmp_path / "x.png"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no labels" in capsys.readouterr().err


def test_cli_bag_with_tiny_model(tmp_path, capsys):
    """End to end through main(): a tiny random-weight model, mcap in, mcap out."""
    pytest.importorskip("lseg_ros.model")
    src, dst = tmp_path / "in.mcap", tmp_path / "out"
    tmp_bag = tmp_path / "b"
    write_bag(tmp_bag, StoragePlugin.MCAP, n=2)
    (tmp_bag / next(p.name for p in tmp_bag.iterdir() if p.suffix == ".mcap")).rename(src)  # bare .mcap file
    rc = segment.main([str(src), "-o", str(dst), "--config", "tiny_vit", "-l", "red, green|lime, other"])
    assert rc == 0, capsys.readouterr().err
    with Reader(dst) as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    assert counts["/cam/image/lseg/mask"] == 2 and counts["/cam/image/lseg/class_confidences"] == 2
    rc = segment.main([str(src), "-o", str(tmp_path / "o2"), "--config", "tiny_vit", "-l", "a", "--topic", "/x"])
    err = capsys.readouterr().err
    assert rc == 2 and "no topic '/x'" in err and "in.mcap" in err


def test_video(tmp_path):
    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    if not w.isOpened():
        pytest.skip("this OpenCV build cannot write mp4")
    for i in range(4):
        w.write(frame(i)[..., ::-1].copy())
    w.release()
    seg = segment.Segmenter(fake_predict, 3, names=LABELS)
    n = segment.segment_video(path, tmp_path / "o", seg, every=2, save_masks=True)
    assert n == 2
    lines = (tmp_path / "o" / "clip_scores.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 2]
    assert sorted(p.name for p in (tmp_path / "o" / "clip_masks").iterdir()) == ["000000.png", "000002.png"]
    assert (tmp_path / "o" / "clip_overlay.mp4").stat().st_size > 0


def test_label_sources(tmp_path):
    from lseg_ros.tools.common import ToolError, parse_label_args

    (tmp_path / "l.yaml").write_text("labels: [floor, 'person|pedestrian']\n")
    assert parse_label_args(["dog, grass ,other"], None) == ["dog", "grass", "other"]
    assert parse_label_args(["wall"], tmp_path / "l.yaml") == ["wall", "floor", "person|pedestrian"]
    with pytest.raises(ToolError, match="duplicate"):
        parse_label_args(["a,b", "a"], None)


def test_failed_bag_leaves_no_partial_output(tmp_path):
    src = tmp_path / "in"
    write_bag(src, StoragePlugin.SQLITE3, n=2)

    def broken(rgb):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        segment.segment_bag(src, tmp_path / "out", ["/cam/image"], segment.Segmenter(broken, 3))
    assert not (tmp_path / "out").exists()


# ---- 3D outputs: a synthetic RGB-D bag -----------------------------------------------
from lseg_ros.geometry import cloud_array, unpack_embeddings, unpack_features  # noqa: E402
from lseg_ros.tools import bag3d  # noqa: E402

FX, FY, CX, CY = 50.0, 40.0, 31.5, 23.5
COLOR, DEPTH, INFO = "/cam/color/image_raw", "/cam/aligned_depth_to_color/image_raw", "/cam/color/camera_info"


def plane_depth(h=48, w=64):
    """Left half a wall at 1.0 m, right half at 2.5 m (millimetres), a 4x4 hole at rows/cols 8..11."""
    mm = np.full((h, w), 1000, np.uint16)
    mm[:, w // 2:] = 2500
    mm[8:12, 8:12] = 0
    return mm


def write_rgbd_bag(path, n=3, depth_encoding="16UC1", depth_first=False, skip_depth=(), depth_dt_ns=0,
                   storage=StoragePlugin.SQLITE3):
    """Colour frames (frame(i)), aligned depth of the same stamp (in bag order after the colour,
    or before with depth_first), camera_info first; frames in skip_depth get no depth."""
    store = get_typestore(Stores.ROS2_KILTED)
    Image, CameraInfo = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    with Writer(path, version=9, storage_plugin=storage) as w:
        cam = w.add_connection(COLOR, "sensor_msgs/msg/Image", typestore=store)
        dep = w.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=store)
        inf = w.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=store)
        info = CameraInfo(header=Header(stamp=Time(sec=99, nanosec=0), frame_id="cam_optical"), height=48, width=64,
                          distortion_model="plumb_bob", d=np.zeros(5), k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1.0]),
                          r=np.eye(3).reshape(-1), p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1.0, 0]),
                          binning_x=0, binning_y=0, roi=roi)
        w.write(inf, 99 * 10**9, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
        mm = plane_depth()
        for i in range(n):
            t = (100 + i) * 10**9
            img = frame(i)
            color = Image(header=Header(stamp=Time(sec=100 + i, nanosec=7), frame_id="cam_optical"), height=48,
                          width=64, encoding="rgb8", is_bigendian=0, step=192, data=img.reshape(-1))
            dstamp = (100 + i) * 10**9 + 7 + depth_dt_ns
            if depth_encoding == "16UC1":
                data, step = mm.view(np.uint8).reshape(-1), 128
            else:
                data, step = (mm / 1000.0).astype(np.float32).view(np.uint8).reshape(-1), 256
            depth = Image(header=Header(stamp=Time(sec=dstamp // 10**9, nanosec=dstamp % 10**9), frame_id="cam_optical"),
                          height=48, width=64, encoding=depth_encoding, is_bigendian=0, step=step, data=data)
            msgs = [(cam, t + 1_000_000, color, "sensor_msgs/msg/Image")]
            if i not in skip_depth:
                msgs.append((dep, t + (0 if depth_first else 2_000_000), depth, "sensor_msgs/msg/Image"))
            for conn, bt, m, ty in sorted(msgs, key=lambda x: x[1]):
                w.write(conn, bt, store.serialize_cdr(m, ty))


def read_topic(path, topic):
    store = bagio.typestore()
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [(t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in r.messages(connections=conns)]


@pytest.mark.parametrize("depth_encoding, depth_first", [("16UC1", False), ("32FC1", True)])
def test_rgbd_bag_points_where_the_pinhole_model_puts_them(tmp_path, depth_encoding, depth_first):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_rgbd_bag(src, depth_encoding=depth_encoding, depth_first=depth_first, skip_depth=(1,))
    seg = segment.Segmenter(fake_predict, len(LABELS))
    counts = segment.segment_bag(src, dst, None, seg)          # colour topic and depth found by name
    c = counts[COLOR]
    assert (c.frames, c.points, c.unpaired, c.errors, c.no_camera_info) == (3, 2, 1, 0, 0)
    clouds = read_topic(dst, f"{COLOR}/lseg/points")
    assert [m.header.stamp.sec for _, m in clouds] == [100, 102]
    colour_times = {m.header.stamp.sec: t for t, m in read_topic(dst, COLOR)}
    mm = plane_depth()
    for bag_time, msg in clouds:
        i = msg.header.stamp.sec - 100
        assert msg.header.frame_id == "cam_optical" and msg.header.stamp.nanosec == 7
        assert bag_time >= colour_times[msg.header.stamp.sec]
        fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
        pts = cloud_array(fields, msg.point_step, msg.data, bool(msg.is_bigendian))
        assert pts.size == msg.width == 48 * 64 - 16 and msg.height == 1 and msg.is_dense
        u = np.rint(pts["x"] / pts["z"] * FX + CX).astype(int)
        v = np.rint(pts["y"] / pts["z"] * FY + CY).astype(int)
        np.testing.assert_allclose(pts["x"], (u - CX) * pts["z"] / FX, atol=1e-5)   # on a pixel's ray
        np.testing.assert_allclose(pts["z"], mm[v, u] / 1000.0, rtol=1e-6)        # at its depth
        assert not ((v >= 8) & (v < 12) & (u >= 8) & (u < 12)).any()              # hole skipped
        img = frame(i)
        np.testing.assert_array_equal(pts["label"], fake_predict(img).mask[v, u])  # the mask's labels
        rgb = img[v, u].astype(np.uint32)
        np.testing.assert_array_equal(pts["rgb"], (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])


def test_rgbd_bag_stamp_tolerance_decimation_and_no_points(tmp_path):
    src = tmp_path / "in"
    write_rgbd_bag(src, n=2, depth_dt_ns=3_000_000)               # depth stamped 3 ms after colour
    seg = segment.Segmenter(fake_predict, len(LABELS), min_confidence=0.8)   # black background is unsure
    exact = segment.segment_bag(src, tmp_path / "a", [COLOR], seg)[COLOR]
    assert (exact.points, exact.unpaired) == (0, 2)
    near = segment.segment_bag(src, tmp_path / "b", [COLOR], seg, opts3d=bag3d.Options3D(
        pair_tolerance_ns=5_000_000, decimation=4, drop_unlabeled=True))[COLOR]
    assert (near.points, near.unpaired) == (2, 0)
    (_, msg), _ = read_topic(tmp_path / "b", f"{COLOR}/lseg/points")
    pts = cloud_array([(f.name, f.offset, f.datatype, f.count) for f in msg.fields], msg.point_step, msg.data)
    mask, _ = seg(frame(0))
    kept = (mask[::4, ::4] != 255) & (plane_depth()[::4, ::4] > 0)
    assert 0 < pts.size == kept.sum() < 12 * 16 and (pts["label"] != 255).all()
    none = segment.segment_bag(src, tmp_path / "c", [COLOR], seg, opts3d=bag3d.Options3D(points=False))[COLOR]
    assert none.points == 0
    with Reader(tmp_path / "c") as r:
        assert f"{COLOR}/lseg/points" not in {c.topic for c in r.connections}


def test_rgbd_bag_features_and_label_embeddings(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_rgbd_bag(src, n=2, storage=StoragePlugin.MCAP)
    seg = segment.Segmenter(fake_predict, len(LABELS), names=LABELS)
    c = segment.segment_bag(src, dst, [COLOR], seg, opts3d=bag3d.Options3D(features=True, features_stride=16))[COLOR]
    assert (c.features, c.points) == (2, 2)
    feats = read_topic(dst, f"{COLOR}/lseg/features")
    for _, msg in feats:
        i = msg.header.stamp.sec - 100
        assert (msg.height, msg.width, msg.channels, msg.stride, msg.image_height, msg.image_width) == (3, 4, 4, 16, 48, 64)
        assert msg.label_set_version == 3 and msg.header.frame_id == "cam_optical"
        got = unpack_features(msg.height, msg.width, msg.channels, msg.encoding, msg.data)
        np.testing.assert_array_equal(got, fake_predict(frame(i), 16).features.transpose(1, 2, 0))
    (_, lm), = read_topic(dst, "/lseg/labels")
    assert [e.name for e in lm.entries] == LABELS and lm.version == 3
    np.testing.assert_array_equal(unpack_embeddings(lm.embedding_dim, lm.embeddings), np.eye(3, 4))


def test_topic_detection_and_errors(tmp_path):
    types = {COLOR: bagio.IMAGE_TYPE, DEPTH: bagio.IMAGE_TYPE, "/cam/depth/image_rect_raw": bagio.IMAGE_TYPE,
             INFO: bagio.CAMERA_INFO_TYPE, "/cam/depth/camera_info": bagio.CAMERA_INFO_TYPE}
    assert bag3d.pick_depth_topic(COLOR, types, [COLOR]) == DEPTH                  # 'aligned' preferred
    assert bag3d.pick_camera_info_topic(COLOR, types) == INFO                      # the sibling
    assert bag3d.pick_camera_info_topic("/other/image", types) == INFO             # the one without 'depth'
    two = {**types, "/cam2/aligned_depth/image": bagio.IMAGE_TYPE}
    assert bag3d.pick_depth_topic(COLOR, two, [COLOR]) is None                     # ambiguous: no points
    assert bag3d.resolve_topics([COLOR], {COLOR: bagio.IMAGE_TYPE}, bag3d.Options3D()) == [(None, None)]
    with pytest.raises(segment.ToolError, match="--depth-topic given 2 times for 1 image topic"):
        bag3d.resolve_topics([COLOR], types, bag3d.Options3D(depth_topics=["/a", "/b"]))
    with pytest.raises(segment.ToolError, match=r"--depth-topic '/nope': no such topic.*aligned_depth"):
        bag3d.resolve_topics([COLOR], types, bag3d.Options3D(depth_topics=["/nope"]))
    with pytest.raises(segment.ToolError, match="is sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image"):
        bag3d.resolve_topics([COLOR], types, bag3d.Options3D(depth_topics=[INFO]))


def test_rgbd_bag_bad_depth_counted_and_2d_goes_on(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    store = get_typestore(Stores.ROS2_KILTED)
    write_rgbd_bag(src, n=2)
    bad = tmp_path / "bad"          # the same bag with mono16 depth and a zero-focal camera_info
    with Reader(src) as r, Writer(bad, version=9) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=store) for c in r.connections}
        for c, t, raw in r.messages():
            m = store.deserialize_cdr(raw, c.msgtype)
            if c.topic == DEPTH:
                m.encoding = "mono16"
            w.write(conns[c.id], t, store.serialize_cdr(m, c.msgtype))
    seg = segment.Segmenter(fake_predict, len(LABELS))
    c = segment.segment_bag(bad, dst, None, seg)[COLOR]
    assert (c.frames, c.points, c.errors) == (2, 0, 2) and "'mono16' is not metric depth" in c.last_error
    assert len(read_topic(dst, f"{COLOR}/lseg/mask")) == 2


def test_cli_rgbd_bag_with_tiny_model(tmp_path, capsys):
    """main() with the tiny random-weight model: points by default; features with --features."""
    pytest.importorskip("lseg_ros.model")

    src = tmp_path / "in"
    write_rgbd_bag(src, n=2)
    rc = segment.main([str(src), "-o", str(tmp_path / "o"), "--config", "tiny_vit", "-l", "red, green, other",
                       "--decimation", "2", "--max-range", "2.0"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"{COLOR}: 2 point clouds -> {COLOR}/lseg/points" in out.out
    (_, msg), _ = read_topic(tmp_path / "o", f"{COLOR}/lseg/points")
    assert msg.width == 24 * 16 - 4                    # left wall only (right at 2.5 m > 2.0), hole 2x2 at k=2
    rc = segment.main([str(src), "-o", str(tmp_path / "o2"), "-l", "a", "--decimation", "0"])
    assert rc == 2 and "--decimation must be >= 1" in capsys.readouterr().err
    rc = segment.main([str(src), "-o", str(tmp_path / "o3"), "--config", "tiny_vit", "-l", "red, green, other",
                       "--features", "--features-stride", "8", "--no-points"])
    assert rc == 0, capsys.readouterr().err
    feats = read_topic(tmp_path / "o3", f"{COLOR}/lseg/features")
    assert len(feats) == 2 and (feats[0][1].height, feats[0][1].width, feats[0][1].stride) == (6, 8, 8)
