"""ROS-free 3D helpers for lseg_ros: depth decoding, pinhole back-projection into a semantic
point cloud (PointCloud2 layout), colour/depth stamp pairing, dense-feature message packing.

numpy only (no rclpy, no torch): the node (lseg_ros/node) and the offline tool (lseg-segment)
fill their messages from the plain values these functions return. See docs/3d.md.
"""
from .camera import Intrinsics
from .cloud import (POINT_FIELDS, POINT_STEP, PointCloud, PointFieldType, cloud_array, points_dtype,
                    semantic_cloud)
from .depth import DEPTH_ENCODINGS, GeometryError, decode_depth, sample_grid
from .features import PackedFeatures, pack_embeddings, pack_features, unpack_embeddings, unpack_features
from .pairing import StampPairer, stamp_ns

__all__ = [
    "GeometryError", "DEPTH_ENCODINGS", "decode_depth", "sample_grid", "Intrinsics",
    "POINT_FIELDS", "POINT_STEP", "PointCloud", "PointFieldType", "semantic_cloud", "cloud_array",
    "points_dtype", "StampPairer", "stamp_ns", "PackedFeatures", "pack_features", "unpack_features",
    "pack_embeddings", "unpack_embeddings",
]
