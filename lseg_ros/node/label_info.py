"""lseg/label_info: the label table as vision_msgs/LabelInfo, the ROS convention for segmentation and
detection nodes (class_id -> class_name, published transient-local beside the outputs, as camera_info
is beside images), so generic tools can decode lseg/mask. One per node, like lseg/labels (which carries
more: version, texts, colours, embeddings). Republished on every label change and when min_confidence
(the message's `threshold`) changes. The unlabeled id (255 with mono8 masks, 65535 with mono16) is in
the table as "unlabeled". Without the vision_msgs package the node says so once and publishes the rest.
"""
from __future__ import annotations

from .qos import latched_profile

TOPIC = "lseg/label_info"
UNLABELED_NAME = "unlabeled"


class LabelInfoPublisher:
    def __init__(self, node) -> None:
        self._node = node
        self._pub = None
        try:
            from vision_msgs.msg import LabelInfo, VisionClass
        except ImportError as e:
            self._types = None
            node.get_logger().info(f"{TOPIC} is not published: the vision_msgs package is not installed ({e}); "
                                   "on a ROS install: apt install ros-$ROS_DISTRO-vision-msgs")
        else:
            self._types = (LabelInfo, VisionClass)

    def open(self) -> None:
        if self._types is not None and self._pub is None:
            self._pub = self._node.create_publisher(self._types[0], TOPIC, latched_profile())

    def publish(self, active, threshold: float, stamp) -> None:
        """The table of `active` (node.labels.ActiveLabels) with `threshold` (min_confidence)."""
        if self._pub is None or active is None:
            return
        label_info, vision_class = self._types
        msg = label_info()
        msg.header.stamp = stamp
        msg.threshold = float(threshold)
        msg.class_map = [vision_class(class_id=i, class_name=name) for i, name in enumerate(active.names)]
        msg.class_map.append(vision_class(class_id=active.unlabeled_id, class_name=UNLABELED_NAME))
        self._pub.publish(msg)

    def close(self) -> None:
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None
