"""``lseg-segment``: segment images, folders, videos and rosbag2 files with free-text labels.

Inference follows the model library's ``Predictor`` (docs/model.md §3.1: argmax over the labels of
the logits; softmax only for the confidences). Outputs per image: ``<stem>_mask.png`` (class
ids, uint8, or uint16 above 255 labels; ``unlabeled`` for pixels below --min-confidence),
``<stem>_overlay.png`` and ``<stem>_scores.json``; per video the overlay video and a JSON-lines
score file; per bag a new bag (see ``bagio``), with a semantic point cloud when the bag has depth
and camera_info, and dense features on request (see ``bag3d``, docs/3d.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from lseg_ros import imaging
from lseg_ros.tools import bag3d, bagio
from lseg_ros.tools.common import ToolError, add_common_args, build_predictor, cli, parse_label_args, progress
from lseg_ros.tools.data import IMAGE_EXTS, DataError, read_image

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class Segmenter:
    """Predictor + label set + output options; ``__call__(rgb) -> (mask, prediction)``."""

    def __init__(self, predict: Callable[[np.ndarray], object], num_labels: int,
                 min_confidence: float = 0.0, names: list[str] | None = None, legend: bool = True,
                 banner: str | None = None) -> None:
        self.predict = predict
        self.num_labels = num_labels
        self.names = names
        self.legend = legend
        self.banner = banner
        self.colors = imaging.palette(num_labels)
        self.min_confidence = float(min_confidence)
        self.unlabeled = imaging.unlabeled_id(num_labels)

    def __call__(self, rgb: np.ndarray, features_stride: int | None = None):
        pred = self.predict(rgb) if features_stride is None else self.predict(rgb, features_stride=features_stride)
        mask, _ = imaging.class_mask(pred.mask, pred.confidence, self.num_labels, self.min_confidence)
        return mask, pred

    def overlay(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Colours blended over the image (unlabeled pixels keep it); legend with the names."""
        return imaging.overlay(rgb, mask, self.colors, self.names, legend=self.legend and bool(self.names),
                               banner=self.banner)


def scores_dict(pred) -> dict:
    return {
        "labels": list(pred.labels.names),
        "label_set_version": int(pred.labels.version),
        "pixel_fraction": [float(x) for x in pred.pixel_fraction],
        "mean_confidence": [float(x) for x in pred.mean_confidence],
        "max_confidence": [float(x) for x in pred.max_confidence],
    }


# ---- inputs ------------------------------------------------------------------------------
def classify_input(path: Path) -> str:
    if not path.exists():
        raise ToolError(f"{path}: no such file or folder")
    if bagio.is_bag(path):
        return "bag"
    if path.is_dir():
        return "folder"
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    raise ToolError(f"{path}: unknown input type {ext!r} (images {IMAGE_EXTS}, videos {VIDEO_EXTS}, "
                    "bags: a rosbag2 folder, .db3 or .mcap)")


def _write_png(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise ToolError(f"{path}: cannot write")


def unique_stem(path: Path, used: set[str]) -> str:
    """An output name for ``path`` not in ``used`` (which it joins): the stem, else stem_ext,
    else stem_ext_2, _3, ... (same-stem inputs from different folders or with other extensions)."""
    stem = path.stem
    if stem in used:
        stem = f"{path.stem}_{path.suffix.lstrip('.')}" if path.suffix else path.stem
        base, n = stem, 2
        while stem in used:
            stem, n = f"{base}_{n}", n + 1
    used.add(stem)
    return stem


def segment_images(paths: list[Path], out_dir: Path, seg: Segmenter, skip_bad: bool = False,
                   save_overlay: bool = True) -> tuple[int, list[str]]:
    """Segment image files; returns (done, skipped messages)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, used = 0, [], set()
    for path in progress(paths, desc="images", unit="img"):
        try:
            rgb = read_image(path)
        except DataError as e:
            if not skip_bad:
                raise ToolError(f"{e} (use --skip-bad to skip such files)") from None
            log.warning("skipping %s", e)
            skipped.append(str(e))
            continue
        stem = unique_stem(path, used)
        mask, pred = seg(rgb)
        _write_png(out_dir / f"{stem}_mask.png", mask)
        if save_overlay:
            _write_png(out_dir / f"{stem}_overlay.png", seg.overlay(rgb, mask))
        (out_dir / f"{stem}_scores.json").write_text(
            json.dumps({"image": str(path), **scores_dict(pred)}, indent=1))
        done += 1
    return done, skipped


def segment_video(path: Path, out_dir: Path, seg: Segmenter, every: int = 1,
                  save_masks: bool = False, max_frames: int | None = None) -> int:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ToolError(f"{path}: cannot open video")
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    mask_dir = out_dir / f"{path.stem}_masks"
    if save_masks:
        mask_dir.mkdir(exist_ok=True)
    done = 0
    try:
        with open(out_dir / f"{path.stem}_scores.jsonl", "w") as scores, \
                progress(total=total, desc=path.name, unit="frame") as bar:
            index = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                bar.update(1)
                if index % every == 0:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    mask, pred = seg(rgb)
                    ov = seg.overlay(rgb, mask)
                    if writer is None:
                        h, w = ov.shape[:2]
                        writer = cv2.VideoWriter(str(out_dir / f"{path.stem}_overlay.mp4"),
                                                 cv2.VideoWriter_fourcc(*"mp4v"), fps / every, (w, h))
                    writer.write(cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
                    if save_masks:
                        _write_png(mask_dir / f"{index:06d}.png", mask)
                    scores.write(json.dumps({"frame": index, **scores_dict(pred)}) + "\n")
                    done += 1
                    if max_frames and done >= max_frames:
                        break
                index += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if done == 0:
        raise ToolError(f"{path}: no frame could be read")
    return done


def segment_bag(src: Path, dst: Path, topics: list[str] | None, seg: Segmenter,
                storage: str | None = None, max_frames: int | None = None,
                opts3d: bag3d.Options3D | None = None) -> dict[str, bag3d.TopicCounts]:
    """Copy ``src`` to a new bag ``dst`` with mask/overlay/class-confidence topics added, and the
    3D outputs that ``opts3d`` asks for and the bag allows (``bag3d``).

    Returns per image topic the frames segmented and the 3D outputs written.
    """
    opts3d = opts3d or bag3d.Options3D()
    from rosbags.rosbag2 import Reader, Writer

    store = bagio.typestore()
    if Path(dst).exists():
        raise ToolError(f"{dst}: output bag exists already; choose a new path")
    try:
        reader = Reader(src)
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types; name the bag
        raise ToolError(f"{src}: cannot open bag ({e})") from None
    try:
        by_topic = {c.topic: c for c in reader.connections}
        image_topics = sorted(c.topic for c in reader.connections
                              if c.msgtype in (bagio.IMAGE_TYPE, bagio.COMPRESSED_TYPE))
        if not topics:
            colour = [t for t in image_topics if "depth" not in t.lower()]
            if len(colour) != 1:
                raise ToolError(f"{src}: give --topic; image topics in the bag: {image_topics or 'none'}")
            topics = colour
        for t in topics:
            if t not in by_topic:
                raise ToolError(f"{src}: no topic {t!r}; image topics: {image_topics or 'none'}; "
                                f"all topics: {sorted(by_topic)}")
            if t not in image_topics:
                raise ToolError(f"{src}: topic {t!r} is {by_topic[t].msgtype}, not an image")
        storage = storage or bagio.detect_storage(Path(src))
        writer = Writer(dst, version=9, storage_plugin=bagio.storage_plugin(storage))
        writer.open()
        try:
            conn_map = {}
            for c in reader.connections:
                ext = c.ext
                kw = dict(serialization_format=getattr(ext, "serialization_format", "cdr"),
                          offered_qos_profiles=getattr(ext, "offered_qos_profiles", []))
                if c.msgdef.data and c.digest:
                    conn_map[c.id] = writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data,
                                                           rihs01=c.digest, **kw)
                else:
                    conn_map[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=store, **kw)
            outs = {}
            for t in topics:
                outs[t] = (writer.add_connection(f"{t}/lseg/mask", bagio.IMAGE_TYPE, typestore=store),
                           writer.add_connection(f"{t}/lseg/overlay", bagio.IMAGE_TYPE, typestore=store),
                           writer.add_connection(f"{t}/lseg/class_confidences", bagio.CONFIDENCES_TYPE,
                                                 typestore=store))
            types = {t: c.msgtype for t, c in by_topic.items()}
            cams = {t: bag3d.Camera3D(t, d, i, opts3d, seg.unlabeled, writer, store)
                    for t, (d, i) in zip(topics, bag3d.resolve_topics(topics, types, opts3d))}
            depth_of = {c.depth_topic: c for c in cams.values() if c.depth_topic}
            info_of = {c.info_topic: c for c in cams.values() if c.info_topic}
            labels_conn = writer.add_connection("/lseg/labels", bagio.LABEL_MAP_TYPE, typestore=store) \
                if opts3d.features else None
            total = sum(by_topic[t].msgcount for t in topics)
            counts = {t: cams[t].counts for t in topics}
            mono = "mono8" if seg.unlabeled == 255 else "mono16"
            stride = opts3d.features_stride if opts3d.features else None
            stamp = 0
            with progress(total=total, desc="frames", unit="frame") as bar:
                for conn, stamp, raw in reader.messages():
                    writer.write(conn_map[conn.id], stamp, raw)
                    if conn.topic in depth_of:
                        depth_of[conn.topic].on_depth(store.deserialize_cdr(raw, conn.msgtype), stamp)
                    if conn.topic in info_of:
                        info_of[conn.topic].on_camera_info(store.deserialize_cdr(raw, conn.msgtype))
                    if conn.topic not in outs or (max_frames and counts[conn.topic].frames >= max_frames):
                        continue
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    try:
                        rgb = bagio.image_msg_to_rgb(msg, conn.msgtype)
                    except ValueError as e:
                        raise ToolError(f"{src}: {conn.topic} at t={stamp}: {e}") from None
                    mask, pred = seg(rgb, stride)
                    if labels_conn is not None:     # once: the labels' text embeddings for feature users
                        header = store.types["std_msgs/msg/Header"](stamp=msg.header.stamp, frame_id="")
                        writer.write(labels_conn, stamp, store.serialize_cdr(bag3d.label_map_msg(
                            store, header, pred.labels, seg.colors, seg.unlabeled), bagio.LABEL_MAP_TYPE))
                        labels_conn = None
                    m_conn, o_conn, c_conn = outs[conn.topic]
                    writer.write(m_conn, stamp, store.serialize_cdr(
                        bagio.make_image_msg(store, msg.header, mask, mono), bagio.IMAGE_TYPE))
                    writer.write(o_conn, stamp, store.serialize_cdr(
                        bagio.make_image_msg(store, msg.header, seg.overlay(rgb, mask), "rgb8"),
                        bagio.IMAGE_TYPE))
                    conf = bagio.make_confidences_msg(
                        store, msg.header, pred.labels.names, pred.labels.version, pred.pixel_fraction,
                        pred.mean_confidence, pred.max_confidence, seg.unlabeled, seg.min_confidence)
                    writer.write(c_conn, stamp, store.serialize_cdr(conf, bagio.CONFIDENCES_TYPE))
                    cams[conn.topic].on_frame(msg.header, rgb, mask, pred, stamp)
                    counts[conn.topic].frames += 1
                    bar.update(1)
            for cam in cams.values():
                cam.finish(stamp)
        except BaseException:
            # no half-written bag under the requested name: it would look like a whole result
            try:
                writer.close()
            finally:
                shutil.rmtree(dst, ignore_errors=True)
            raise
        writer.close()
    finally:
        reader.close()
    return counts


# ---- CLI ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-segment",
        description="Segment images, folders, videos or rosbag2 bags with free-text labels (LSeg).",
        epilog="examples:\n"
               "  lseg-segment -w demo_e200.ckpt -l 'dog, grass, other' photo.jpg -o out/\n"
               "  lseg-segment -w model.safetensors --labels-file labels.yaml frames/ -o out/\n"
               "  lseg-segment -w model.safetensors -l 'floor, wall, other' run.mcap -o run_lseg "
               "--topic /camera/image_raw",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders, videos or bags")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output folder (images, videos) or the new bag's path (one bag input)")
    p.add_argument("-l", "--labels", action="append",
                   help="comma-separated labels, repeatable; 'a|b' gives alternatives for one class")
    p.add_argument("--labels-file", type=Path, help="YAML list / {labels: [...]} or a text file")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="pixels whose winning probability is lower get the unlabeled id (255/65535)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted) instead of failing")
    p.add_argument("--no-overlay", action="store_true", help="images: write masks and scores only")
    p.add_argument("--no-legend", action="store_true", help="overlays without the class-name legend")
    p.add_argument("--topic", action="append", help="bag image topic(s) to segment (default: the only one)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), help="output bag storage (default: as the input)")
    p.add_argument("--every", type=int, default=1, help="videos: segment every Nth frame")
    p.add_argument("--save-masks", action="store_true", help="videos: also write per-frame mask PNGs")
    p.add_argument("--max-frames", type=int, help="videos/bags: stop after this many segmented frames")
    p.add_argument("--multiscale", action="store_true",
                   help="the reference multi-scale + flip protocol (docs/model.md §3.2; slow)")
    p.add_argument("--max-side", type=int, default=None,
                   help="single pass: shrink so the long side is at most this (default: full size)")
    bag3d.add_args(p)
    add_common_args(p)
    return p


def make_segmenter(args, labels: list[str]) -> Segmenter:
    pred = build_predictor(args, args.device, args.max_side)
    label_set = pred.encode_labels(labels)
    kwargs = {"protocol": "reference"} if args.multiscale else {}
    return Segmenter(lambda rgb, **kw: pred.predict(rgb, label_set, channel_order="rgb", **kwargs, **kw),
                     len(labels), args.min_confidence, list(label_set.names), not args.no_legend,
                     banner=imaging.UNTRAINED_BANNER if pred.net.untrained else None)


@cli
def _run(args) -> int:
    labels = parse_label_args(args.labels, args.labels_file)
    kinds = [(p, classify_input(p)) for p in args.inputs]
    bags = [p for p, k in kinds if k == "bag"]
    if bags and len(args.inputs) > 1:
        raise ToolError("a bag is segmented on its own: give one bag and -o NEW_BAG_PATH")
    opts3d = bag3d.options_from_args(args)
    seg = make_segmenter(args, labels)
    if bags:
        counts = segment_bag(bags[0], args.output, args.topic, seg, args.storage, args.max_frames, opts3d)
        for t, c in counts.items():
            print(f"{t}: {c.frames} frames segmented -> {t}/lseg/{{mask,overlay,class_confidences}}")
            if c.points or c.unpaired or c.errors or c.no_camera_info:
                print(f"{t}: {c.points} point clouds -> {t}/lseg/points; {c.unpaired} frames without depth of "
                      f"their stamp, {c.no_camera_info} before any camera_info, {c.errors} refused"
                      + (f" (last: {c.last_error})" if c.errors else "")
                      + (" (stamps differ? --pair-tolerance-ms)" if c.unpaired and not c.points else ""))
            if c.features:
                print(f"{t}: {c.features} feature grids -> {t}/lseg/features; label embeddings -> /lseg/labels")
        print(f"wrote {args.output}")
        return 0
    images: list[Path] = []
    for p, k in kinds:
        if k == "image":
            images.append(p)
        elif k == "folder":
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise ToolError(f"{p}: no images ({', '.join(IMAGE_EXTS)})")
            images += found
    skipped: list[str] = []
    if images:
        done, skipped = segment_images(images, args.output, seg, args.skip_bad, not args.no_overlay)
        print(f"{done} image(s) segmented -> {args.output}" + (f"; {len(skipped)} skipped" if skipped else ""))
    for p, k in kinds:
        if k == "video":
            n = segment_video(p, args.output, seg, max(args.every, 1), args.save_masks, args.max_frames)
            print(f"{p}: {n} frames segmented -> {args.output}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
