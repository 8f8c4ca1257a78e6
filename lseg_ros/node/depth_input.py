"""One camera's depth and camera_info, and the semantic point cloud made from them (docs/3d.md).

The depth callback only buffers the frame in a `StampPairer` (bounded); the worker, after a colour
frame was segmented, looks up the depth frame of its stamp (exact, or nearest within
`depth_tolerance`), projects it with the latest camera_info (pinhole; distortion assumed rectified,
as aligned depth is) and publishes `<camera>/lseg/points`. Missing depth or camera_info, or a depth
image that cannot be used (encoding, size, zero focal length) never stop the 2D outputs: they are
counted, logged once every 2 s with the reason, and shown in the camera's /diagnostics status.
"""
from __future__ import annotations

import array
import threading
from typing import Any, Callable, Dict, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from .. import geometry as g
from .cameras import AdaptiveSubscription
from .config import NodeConfig


def default_info_topic(image_topic: str) -> str:
    """camera_info beside the image, as camera drivers publish it: /cam/color/image_raw -> /cam/color/camera_info."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info" if "/" in image_topic.lstrip("/") else (
        "/camera_info" if image_topic.startswith("/") else "camera_info")


class DepthInput:
    def __init__(self, node: Node, depth_topic: str, info_topic: str, callback_group,
                 warn: Callable[[str], None]) -> None:
        self.node = node
        self.pairer = g.StampPairer()
        self.depth = AdaptiveSubscription(node, Image, depth_topic,
                                          lambda m: self.pairer.add_depth(g.stamp_ns(m.header.stamp), m),
                                          callback_group, warn)
        self.info_topic = info_topic
        self.info_sub = None
        self.info: Optional[Any] = None
        self.group = callback_group
        self.lock = threading.Lock()
        self.counts = {"points_published": 0, "no_camera_info": 0, "refused": 0}
        self.problem = ""  # why the last colour frame got no cloud ("" when it got one)

    def refresh(self, cfg: NodeConfig) -> None:
        self.pairer.tolerance_ns = int(cfg.depth_tolerance * 1e9)
        self.depth.refresh(cfg.input_reliability, cfg.input_depth + 4)  # depth may arrive after colour
        if self.info_sub is None:
            # best effort matches reliable and best-effort drivers; camera_info is small, nothing is lost
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.info_sub = self.node.create_subscription(CameraInfo, self.info_topic, self._on_info, qos,
                                                          callback_group=self.group)

    def hold(self, stamp) -> None:
        self.pairer.hold(g.stamp_ns(stamp))

    def _on_info(self, msg) -> None:
        self.info = msg

    def _fail(self, what: Optional[str], problem: str) -> None:
        with self.lock:
            if what is not None:  # (unpaired frames are counted by the pairer)
                self.counts[what] += 1
            self.problem = problem

    def cloud(self, header, rgb: np.ndarray, pred, active, cfg: NodeConfig,
              log_error: Callable[[str], None]) -> Optional[PointCloud2]:
        """The PointCloud2 for a segmented colour frame, or None (counted, reason kept)."""
        depth = self.pairer.lookup(g.stamp_ns(header.stamp))
        if depth is None:
            self._fail(None, f"no depth frame on {self.depth.topic} within {cfg.depth_tolerance} s "
                                   f"of the colour stamp {header.stamp.sec}.{header.stamp.nanosec:09d}")
            return None
        info = self.info
        if info is None:
            self._fail("no_camera_info", f"no camera_info received on {self.info_topic}")
            return None
        h, w = rgb.shape[:2]
        try:
            z = g.decode_depth(depth.encoding, depth.height, depth.width, depth.step, bool(depth.is_bigendian),
                               depth.data)
            intr = g.Intrinsics.from_k(info.k, info.width, info.height).for_image(w, h)
            pc = g.semantic_cloud(z, intr, rgb, pred.mask, pred.confidence, decimation=cfg.points_decimation,
                                  max_range=cfg.points_max_range, min_confidence=cfg.min_confidence,
                                  unlabeled_id=active.unlabeled_id, drop_unlabeled=cfg.points_drop_unlabeled)
        except g.GeometryError as e:
            self._fail("refused", f"no point cloud: {e}")
            log_error(f"no point cloud for {self.depth.topic}: {e}")
            return None
        data = array.array("B")
        data.frombytes(pc.data)
        msg = PointCloud2(header=header, height=pc.height, width=pc.width, is_bigendian=pc.is_bigendian,
                          point_step=pc.point_step, row_step=pc.row_step, is_dense=pc.is_dense,
                          fields=[PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in pc.fields])
        msg.data = data
        with self.lock:
            self.counts["points_published"] += 1
            self.problem = ""
        return msg

    def status(self) -> Dict[str, str]:
        with self.lock:
            out = {k: str(v) for k, v in self.counts.items()}
            problem = self.problem
        out.update({f"depth_{k}": str(v) for k, v in self.pairer.counters().items()})
        out["points_problem"] = problem
        out["depth_topic"] = self.depth.sub.topic_name if self.depth.sub is not None else self.depth.topic
        return out

    def close(self) -> None:
        self.depth.close()
        if self.info_sub is not None:
            self.node.destroy_subscription(self.info_sub)
            self.info_sub = None
