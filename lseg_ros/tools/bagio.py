"""rosbag2 reading and writing without a ROS install (``rosbags``), for ``lseg-segment``.

A new bag gets every original connection and message (copied raw, untouched) plus, per
segmented image topic ``T``: ``T/lseg/mask`` (sensor_msgs/Image mono8, or mono16 above 255
labels), ``T/lseg/overlay`` (rgb8) and ``T/lseg/class_confidences`` (lseg_ros/msg/
ClassConfidences), each stamped with the input header and written at the input's bag time.
With 3D outputs (``bag3d``): ``T/lseg/points`` (sensor_msgs/PointCloud2), ``T/lseg/features``
(lseg_ros/msg/DenseFeatures) and ``/lseg/labels`` (lseg_ros/msg/LabelMap with the labels' text
embeddings). The lseg_ros types are not in rosbags' typestore: they are registered from the
package's ``msg/*.msg`` files.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DEPTH_TYPE = IMAGE_TYPE
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
CONFIDENCES_TYPE = "lseg_ros/msg/ClassConfidences"
FEATURES_TYPE = "lseg_ros/msg/DenseFeatures"
LABEL_MAP_TYPE = "lseg_ros/msg/LabelMap"
LABEL_ENTRY_TYPE = "lseg_ros/msg/LabelEntry"
_OWN_TYPES = (CONFIDENCES_TYPE, FEATURES_TYPE, LABEL_ENTRY_TYPE, LABEL_MAP_TYPE)


def typestore():
    """The Kilted typestore with the lseg_ros messages (ClassConfidences, DenseFeatures,
    LabelEntry, LabelMap) registered from their .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name in _OWN_TYPES:
        types.update(get_types_from_msg(msg_text(name.rsplit("/", 1)[1] + ".msg"), name))
    store.register(types)
    return store


def msg_text(filename: str) -> str:
    """Text of one of the package's .msg files: from the installed share folder or the source tree."""
    for path in _msg_candidates(filename):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"{filename} not found in share/lseg_ros/msg or the source tree's msg/")


def confidences_msg_text() -> str:
    """Text of ClassConfidences.msg."""
    return msg_text("ClassConfidences.msg")


def _msg_candidates(name: str):
    try:  # an installed (ament) package; pure Python, no rclpy
        from ament_index_python.packages import get_package_share_directory

        yield Path(get_package_share_directory("lseg_ros")) / "msg" / name
    except Exception:  # noqa: BLE001 - not installed / ament_index absent: try the others
        pass
    yield Path(sys.prefix) / "share" / "lseg_ros" / "msg" / name
    yield Path(__file__).resolve().parents[2] / "msg" / name


def is_bag(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix in (".db3", ".mcap")


# ---- sensor_msgs/Image <-> numpy (conversions shared with the node: lseg_ros.imaging) ----------
def image_msg_to_rgb(msg, msgtype: str) -> np.ndarray:
    """Decode a sensor_msgs Image or CompressedImage message to HxWx3 uint8 RGB.

    Raises ``imaging.ImageError`` (a ValueError) for unsupported or malformed images.
    """
    from lseg_ros import imaging

    if msgtype == COMPRESSED_TYPE:
        img, order = imaging.decode_compressed(msg.format, bytes(msg.data))
    else:
        img, order = imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step,
                                          bool(msg.is_bigendian), bytes(msg.data))
    img = img[..., ::-1] if order == "bgr" else img
    return np.array(img, copy=True, order="C")   # decode may return a read-only view of the message


def make_image_msg(store, header, array: np.ndarray, encoding: str):
    """A sensor_msgs/Image (rosbags dataclass) from a HxW or HxWx3 array."""
    from lseg_ros import imaging

    h, w, step, big, data = imaging.encode_image(array, encoding)
    return store.types[IMAGE_TYPE](header=header, height=h, width=w, encoding=encoding,
                                   is_bigendian=int(big), step=step,
                                   data=np.frombuffer(data, np.uint8))


def make_confidences_msg(store, header, names, version, pixel_fraction, mean_conf, max_conf,
                         unlabeled_id: int, min_confidence: float = 0.0):
    """A ClassConfidences message, filling exactly the fields the .msg file declares."""
    cls = store.types[CONFIDENCES_TYPE]
    values = {
        "header": header,
        "label_set_version": int(version),
        "labels": list(names),
        "pixel_fraction": np.asarray(pixel_fraction, np.float32),
        "mean_confidence": np.asarray(mean_conf, np.float32),
        "max_confidence": np.asarray(max_conf, np.float32),
        "unlabeled_id": int(unlabeled_id),
        "min_confidence": float(min_confidence),
    }
    fields = [f for f in cls.__dataclass_fields__ if not f.startswith("__")]
    missing = [f for f in fields if f not in values]
    if missing:
        raise RuntimeError(f"ClassConfidences.msg has fields this tool does not fill: {missing}")
    return cls(**{f: values[f] for f in fields})


def storage_plugin(name: str):
    from rosbags.rosbag2 import StoragePlugin

    try:
        return {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[name]
    except KeyError:
        raise ValueError(f"storage must be sqlite3 or mcap, got {name!r}") from None


def detect_storage(path: Path) -> str:
    """'mcap' or 'sqlite3', from the bag's files (the default for the output bag)."""
    path = Path(path)
    files = [path] if path.is_file() else list(path.iterdir())
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"
