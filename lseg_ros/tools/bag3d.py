"""3D outputs of ``lseg-segment`` for bags: semantic point clouds and dense features (docs/3d.md).

Per segmented image topic ``T``: ``T/lseg/points`` when the bag has that camera's depth (aligned
to colour, 16UC1 mm or 32FC1 m) and camera_info, ``T/lseg/features`` with ``--features``; and,
with features, one ``/lseg/labels`` LabelMap carrying the labels' text embeddings. The projection,
pairing and packing are ``lseg_ros.geometry``'s (the node uses the same functions).

Topics are named with --depth-topic / --camera-info-topic, else found by type and name:
depth = the Image topics other than the colour ones whose name contains "depth" (with several,
the ones containing "aligned"; still several: ambiguous, no points, a warning);
camera_info = ``dirname(T)/camera_info``, else the only CameraInfo topic without "depth" in its
name, else the only CameraInfo topic.
"""
from __future__ import annotations

import argparse
import logging
import posixpath
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from lseg_ros import geometry
from lseg_ros.tools import bagio
from lseg_ros.tools.common import ToolError

log = logging.getLogger(__name__)


@dataclass
class Options3D:
    """What the 3D outputs are and how they are made (the CLI's options)."""

    points: bool = True
    features: bool = False
    features_stride: int = 16
    depth_topics: Optional[Sequence[str]] = None
    camera_info_topics: Optional[Sequence[str]] = None
    decimation: int = 1
    min_range: float = 0.0
    max_range: float = float("inf")
    drop_unlabeled: bool = False
    pair_tolerance_ns: int = 0
    pair_capacity: int = 30


@dataclass
class TopicCounts:
    """Per image topic: frames segmented and what became of their 3D outputs."""

    frames: int = 0
    points: int = 0            # point clouds written
    features: int = 0          # feature messages written
    unpaired: int = 0          # colour frames without a depth frame of the same stamp
    no_camera_info: int = 0    # paired, but no usable camera_info yet
    errors: int = 0            # depth / camera_info refused (GeometryError)
    last_error: str = ""


def add_args(p: argparse.ArgumentParser) -> None:
    """lseg-segment's options for the 3D outputs."""
    g = p.add_argument_group("bags: 3D outputs (docs/3d.md)")
    g.add_argument("--no-points", action="store_true",
                   help="no T/lseg/points even when the bag has depth and camera_info")
    g.add_argument("--depth-topic", action="append",
                   help="depth image topic (16UC1 mm / 32FC1 m, aligned to colour), one per --topic, same "
                        "order (default: the image topic with 'depth' in its name, 'aligned' preferred)")
    g.add_argument("--camera-info-topic", action="append",
                   help="camera_info topic, one per --topic (default: the image topic's sibling camera_info)")
    g.add_argument("--decimation", type=int, default=1, help="points: every k-th pixel along rows and columns")
    g.add_argument("--min-range", type=float, default=0.0, help="points: nearer depths are skipped (m)")
    g.add_argument("--max-range", type=float, default=float("inf"), help="points: farther depths are skipped (m)")
    g.add_argument("--drop-unlabeled", action="store_true",
                   help="points: leave out pixels below --min-confidence instead of labelling them unlabeled")
    g.add_argument("--pair-tolerance-ms", type=float, default=0.0,
                   help="points: pair colour with the nearest depth stamp within this (default: exact stamps)")
    g.add_argument("--features", action="store_true",
                   help="write T/lseg/features (per-pixel LSeg embeddings) and /lseg/labels with text embeddings")
    g.add_argument("--features-stride", type=int, default=16,
                   help="input pixels per feature cell (default 16; 2 = the network's own output resolution)")


def options_from_args(args: argparse.Namespace) -> Options3D:
    """The 3D options from the CLI, checked before the model loads."""
    if args.decimation < 1:
        raise ToolError(f"--decimation must be >= 1, got {args.decimation}")
    if not 0 <= args.min_range < args.max_range:
        raise ToolError(f"need 0 <= --min-range < --max-range, got {args.min_range}, {args.max_range}")
    if args.features and args.features_stride < 1:
        raise ToolError(f"--features-stride must be >= 1, got {args.features_stride}")
    if args.features and args.multiscale:
        raise ToolError("--features comes from the single-pass predictor; drop --multiscale")
    if args.pair_tolerance_ms < 0:
        raise ToolError(f"--pair-tolerance-ms must be >= 0, got {args.pair_tolerance_ms}")
    return Options3D(
        points=not args.no_points, features=args.features, features_stride=args.features_stride,
        depth_topics=args.depth_topic, camera_info_topics=args.camera_info_topic, decimation=args.decimation,
        min_range=args.min_range, max_range=args.max_range, drop_unlabeled=args.drop_unlabeled,
        pair_tolerance_ns=int(round(args.pair_tolerance_ms * 1e6)))


def pick_depth_topic(image_topic: str, by_type: dict[str, str], colour_topics: Sequence[str]) -> Optional[str]:
    """The depth topic for `image_topic` by name (module docstring), or None (with a warning)."""
    cands = sorted(t for t, ty in by_type.items()
                   if ty == bagio.DEPTH_TYPE and t not in colour_topics and "depth" in t.lower())
    if len(cands) > 1:
        aligned = [t for t in cands if "aligned" in t.lower()]
        cands = aligned or cands
    if len(cands) == 1:
        return cands[0]
    if cands:
        log.warning("%s: several depth topics %s; give --depth-topic for points", image_topic, cands)
    return None


def pick_camera_info_topic(image_topic: str, by_type: dict[str, str]) -> Optional[str]:
    infos = sorted(t for t, ty in by_type.items() if ty == bagio.CAMERA_INFO_TYPE)
    sibling = posixpath.join(posixpath.dirname(image_topic), "camera_info")
    if sibling in infos:
        return sibling
    colour = [t for t in infos if "depth" not in t.lower()]
    if len(colour) == 1:
        return colour[0]
    if len(infos) == 1:
        return infos[0]
    if infos:
        log.warning("%s: several camera_info topics %s; give --camera-info-topic for points", image_topic, infos)
    return None


def resolve_topics(image_topics: Sequence[str], by_type: dict[str, str], opts: Options3D
                   ) -> list[tuple[Optional[str], Optional[str]]]:
    """(depth, camera_info) topic per image topic; None where points cannot be made.

    Raises:
        ToolError: a named topic that is missing or of the wrong type, or lists of another length.
    """
    if not opts.points:
        return [(None, None)] * len(image_topics)
    out = []
    for name, given, want in (("--depth-topic", opts.depth_topics, bagio.DEPTH_TYPE),
                              ("--camera-info-topic", opts.camera_info_topics, bagio.CAMERA_INFO_TYPE)):
        if given and len(given) != len(image_topics):
            raise ToolError(f"{name} given {len(given)} times for {len(image_topics)} image topic(s) "
                            f"{list(image_topics)}: give one per image topic, in the same order")
        for t in given or ():
            if t not in by_type:
                raise ToolError(f"{name} {t!r}: no such topic in the bag; topics of type {want}: "
                                f"{sorted(k for k, v in by_type.items() if v == want) or 'none'}")
            if by_type[t] != want:
                raise ToolError(f"{name} {t!r} is {by_type[t]}, not {want}")
    for i, t in enumerate(image_topics):
        depth = opts.depth_topics[i] if opts.depth_topics else pick_depth_topic(t, by_type, image_topics)
        info = opts.camera_info_topics[i] if opts.camera_info_topics else pick_camera_info_topic(t, by_type)
        if bool(depth) != bool(info):
            log.warning("%s: %s found but no %s topic: no points", t, depth or info,
                        "camera_info" if depth else "depth")
        out.append((depth, info) if depth and info else (None, None))
    return out


@dataclass
class _Frame:
    header: object
    rgb: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray


class Camera3D:
    """One image topic's 3D state in a bag pass: pairer, latest camera_info, output connections."""

    def __init__(self, topic: str, depth_topic: Optional[str], info_topic: Optional[str], opts: Options3D,
                 unlabeled_id: int, writer, store) -> None:
        self.topic, self.depth_topic, self.info_topic = topic, depth_topic, info_topic
        self.opts, self.unlabeled_id, self.writer, self.store = opts, unlabeled_id, writer, store
        self.counts = TopicCounts()
        self.pairer = geometry.StampPairer(opts.pair_tolerance_ns, opts.pair_capacity) if depth_topic else None
        self.info = None
        self.points_conn = writer.add_connection(f"{topic}/lseg/points", bagio.POINTS_TYPE, typestore=store) \
            if self.pairer else None
        self.features_conn = writer.add_connection(f"{topic}/lseg/features", bagio.FEATURES_TYPE,
                                                   typestore=store) if opts.features else None

    def on_depth(self, msg, bag_time: int) -> None:
        self._write_pairs(self.pairer.add_depth(geometry.stamp_ns(msg.header.stamp), msg), bag_time)

    def on_camera_info(self, msg) -> None:
        self.info = msg

    def on_frame(self, header, rgb: np.ndarray, mask: np.ndarray, pred, bag_time: int) -> None:
        """After the 2D outputs of a colour frame: its features now, its points once paired."""
        if self.features_conn is not None:
            self._write_features(header, rgb, pred, bag_time)
        if self.pairer is not None:
            frame = _Frame(header, rgb, mask, pred.confidence)
            self._write_pairs(self.pairer.add_color(geometry.stamp_ns(header.stamp), frame), bag_time)

    def finish(self, bag_time: int) -> TopicCounts:
        if self.pairer is not None:
            self._write_pairs(self.pairer.flush(), bag_time)
            self.counts.unpaired = self.pairer.counters()["unpaired"]
        return self.counts

    def _write_features(self, header, rgb, pred, bag_time: int) -> None:
        feats = getattr(pred, "features", None)
        if feats is None:
            raise ToolError("--features: the predictor returned no features (Prediction.features is None)")
        p = geometry.pack_features(feats, self.opts.features_stride, rgb.shape[:2])
        msg = self.store.types[bagio.FEATURES_TYPE](
            header=header, label_set_version=int(pred.labels.version), height=p.height, width=p.width,
            channels=p.channels, stride=p.stride, image_height=p.image_height, image_width=p.image_width,
            encoding=p.encoding, data=np.frombuffer(p.data, np.uint8))
        self.writer.write(self.features_conn, bag_time, self.store.serialize_cdr(msg, bagio.FEATURES_TYPE))
        self.counts.features += 1

    def _write_pairs(self, pairs, bag_time: int) -> None:
        # Written at the bag time the pair was complete: the bag stays in time order, as a live
        # node publishes the cloud after both inputs arrived; the header is the colour frame's.
        for frame, depth in pairs:
            if depth is None:
                continue
            if self.info is None:
                self.counts.no_camera_info += 1
                continue
            try:
                cloud = self._cloud(frame, depth)
            except geometry.GeometryError as e:
                self.counts.errors += 1
                if str(e) != self.counts.last_error:
                    log.warning("%s at t=%d: no points: %s", self.topic, geometry.stamp_ns(frame.header.stamp), e)
                self.counts.last_error = str(e)
                continue
            self.writer.write(self.points_conn, bag_time,
                              self.store.serialize_cdr(points_msg(self.store, frame.header, cloud), bagio.POINTS_TYPE))
            self.counts.points += 1

    def _cloud(self, frame: _Frame, depth) -> geometry.PointCloud:
        h, w = frame.mask.shape
        intr = geometry.Intrinsics.from_k(self.info.k, self.info.width, self.info.height).for_image(w, h)
        z = geometry.decode_depth(depth.encoding, depth.height, depth.width, depth.step,
                                  bool(depth.is_bigendian), depth.data)
        o = self.opts
        return geometry.semantic_cloud(z, intr, frame.rgb, frame.mask, frame.confidence, decimation=o.decimation,
                                       min_range=o.min_range, max_range=o.max_range,
                                       unlabeled_id=self.unlabeled_id, drop_unlabeled=o.drop_unlabeled)


def points_msg(store, header, cloud: geometry.PointCloud):
    """sensor_msgs/PointCloud2 (rosbags dataclass) from a geometry.PointCloud."""
    field = store.types["sensor_msgs/msg/PointField"]
    return store.types[bagio.POINTS_TYPE](
        header=header, height=cloud.height, width=cloud.width,
        fields=[field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in cloud.fields],
        is_bigendian=cloud.is_bigendian, point_step=cloud.point_step, row_step=cloud.row_step,
        data=np.frombuffer(cloud.data, np.uint8), is_dense=cloud.is_dense)


def label_map_msg(store, header, label_set, colors: np.ndarray, unlabeled_id: int):
    """lseg_ros/msg/LabelMap with the label set's text embeddings (for feature users)."""
    entry = store.types[bagio.LABEL_ENTRY_TYPE]
    emb = label_set.embeddings
    emb = emb.detach().float().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb, np.float32)
    dim, flat = geometry.pack_embeddings(emb)
    entries = [entry(class_id=i, name=n, text=t, r=int(c[0]), g=int(c[1]), b=int(c[2]))
               for i, (n, t, c) in enumerate(zip(label_set.names, label_set.texts, colors))]
    return store.types[bagio.LABEL_MAP_TYPE](header=header, version=int(label_set.version), entries=entries,
                                             unlabeled_id=int(unlabeled_id), embedding_dim=dim, embeddings=flat)
