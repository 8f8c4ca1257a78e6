"""One camera's outputs: mask, overlay, confidence, heatmaps and class confidences.

Every message carries the camera frame's header and its resolution. Images nobody subscribes to are
neither computed nor sent; class_confidences goes out for every processed frame.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Tuple

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2

from lseg_ros.msg import ClassConfidences, DenseFeatures

from .. import imaging
from ..geometry.features import pack_features
from ..model.render import OverlayStyle, RenderRequest, render_host
from . import params as P
from .config import NodeConfig
from .diagnostics import Lap
from .labels import ActiveLabels
from .qos import output_profile
from .ros_image import image_msg


class CameraOutputs:
    def __init__(self, node: Node, prefix: str, depth: int, heatmap_labels: List[str]) -> None:
        self.node, self.prefix, self.depth = node, prefix, depth
        qos = output_profile(depth)
        self.mask = node.create_publisher(Image, f"{prefix}/mask", qos)
        self.overlay = node.create_publisher(Image, f"{prefix}/overlay", qos)
        self.confidence = node.create_publisher(Image, f"{prefix}/confidence", qos)
        self.scores = node.create_publisher(ClassConfidences, f"{prefix}/class_confidences", qos)
        self.features = node.create_publisher(DenseFeatures, f"{prefix}/features", qos)
        self.points = node.create_publisher(PointCloud2, f"{prefix}/points", qos)
        self._lock = threading.Lock()  # heatmap publishers: parameter thread vs worker
        self.heatmaps: Dict[str, Any] = {}
        self.set_heatmaps(heatmap_labels)

    def set_heatmaps(self, names: List[str]) -> None:
        wanted = {n.strip().casefold(): n.strip() for n in names if n.strip()}
        with self._lock:
            for key in list(self.heatmaps):
                if key not in wanted:
                    self.node.destroy_publisher(self.heatmaps.pop(key))
            for key, name in wanted.items():
                if key not in self.heatmaps:
                    self.heatmaps[key] = self.node.create_publisher(
                        Image, f"{self.prefix}/heatmap/{P.topic_token(name)}", output_profile(self.depth))

    def wanted_heatmaps(self, names: Tuple[str, ...]) -> Tuple[Dict[str, Tuple[Any, int]], List[str]]:
        """({key: (publisher, label index)} of subscribed heatmaps, [subscribed names not in the labels])."""
        heat, missing = {}, []
        with self._lock:
            for key, pub in self.heatmaps.items():
                if pub.get_subscription_count() > 0:
                    idx = next((i for i, n in enumerate(names) if n.casefold() == key), None)
                    if idx is None:
                        missing.append(key)
                    else:
                        heat[key] = (pub, idx)
        return heat, missing

    def publish(self, header, image: np.ndarray, order: str, pred, active: ActiveLabels,
                heat: Dict[str, Tuple[Any, int]], cfg: NodeConfig, stages: Dict[str, float]) -> None:
        """Publishes what is subscribed, from the images the Predictor built with the results
        (`pred.class_ids`, `pred.overlay`; built here when they were not asked for, e.g. a subscriber
        that joined after the batch was submitted); adds each output's time to `stages` (seconds)."""
        n = len(active.names)
        lap = Lap(stages)
        if self.mask.get_subscription_count() > 0:
            ids = pred.class_ids
            if ids is None:
                ids, _ = imaging.class_mask(pred.mask, pred.confidence, n, cfg.min_confidence)
            self.mask.publish(image_msg(header, ids, "mono8" if ids.dtype == np.uint8 else "mono16"))
            lap("mask")
        if self.overlay.get_subscription_count() > 0:
            vis = pred.overlay
            if vis is None:
                style = OverlayStyle(active.colors, cfg.overlay_alpha)
                vis = render_host(pred.mask, pred.confidence, image, order, n,
                                  RenderRequest(min_confidence=cfg.min_confidence, overlay=style))["overlay"]
            counts = np.asarray(pred.pixel_fraction) if n > 12 else None  # present-only legend
            imaging.decorate(vis, active.names if cfg.overlay_legend else None, active.colors, counts,
                             banner=imaging.UNTRAINED_BANNER if cfg.untrained else None)
            self.overlay.publish(image_msg(header, vis, "rgb8"))
            lap("overlay")
        if self.confidence.get_subscription_count() > 0:
            self.confidence.publish(image_msg(header, pred.confidence, "32FC1"))
            lap("confidence")
        for pub, idx in heat.values():
            try:
                pub.publish(image_msg(header, pred.probs[idx], "32FC1"))
            except Exception as e:  # a publisher destroyed by a concurrent heatmap_labels change
                self.node.get_logger().debug(f"heatmap publish skipped: {e}")
        if heat:
            lap("heatmaps")
        if pred.features is not None and self.features.get_subscription_count() > 0:
            packed = pack_features(pred.features, cfg.features_stride, image.shape[:2])
            msg = DenseFeatures(header=header, label_set_version=active.version, **{
                k: getattr(packed, k) for k in ("height", "width", "channels", "stride", "image_height",
                                                "image_width", "encoding")})
            msg.data = packed.data
            self.features.publish(msg)
            lap("features")
        scores = ClassConfidences()
        scores.header = header
        scores.label_set_version = active.version
        scores.labels = list(active.names)
        scores.pixel_fraction = np.asarray(pred.pixel_fraction, np.float32).tolist()
        scores.mean_confidence = np.asarray(pred.mean_confidence, np.float32).tolist()
        scores.max_confidence = np.asarray(pred.max_confidence, np.float32).tolist()
        scores.unlabeled_id = active.unlabeled_id
        scores.min_confidence = float(cfg.min_confidence)
        self.scores.publish(scores)
        lap("class_confidences")

    def close(self) -> None:
        with self._lock:
            pubs = [self.mask, self.overlay, self.confidence, self.scores, self.features, self.points,
                    *self.heatmaps.values()]
            self.heatmaps = {}
        for pub in pubs:
            self.node.destroy_publisher(pub)
