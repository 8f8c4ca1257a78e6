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


def fake_predict(rgb):
    """Deterministic stand-in for the Predictor: class = argmax of (R, G, 60)."""
    score = np.stack([rgb[..., 0], rgb[..., 1], np.full(rgb.shape[:2], 60, np.uint8)]).astype(np.float32)
    mask = score.argmax(0).astype(np.int32)
    probs = np.exp(score / 50) / np.exp(score / 50).sum(0)
    conf = probs.max(0)
    n = len(LABELS)
    frac = np.array([(mask == i).mean() for i in range(n)], np.float32)
    mean = np.array([conf[mask == i].mean() if (mask == i).any() else 0 for i in range(n)], np.float32)
    return SimpleNamespace(mask=mask, confidence=conf, pixel_fraction=frac, mean_confidence=mean,
                           max_confidence=probs.reshape(n, -1).max(1),
                           labels=SimpleNamespace(names=tuple(LABELS), version=3))


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
    assert counts == {"/cam/image": 3}
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
