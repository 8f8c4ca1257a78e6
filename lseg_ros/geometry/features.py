"""Dense LSeg features and text embeddings <-> the flat fields of the lseg_ros messages.

`Prediction.features` is (C, h, w) float16, channel-first as the network computes it. A mapper
reads one pixel's vector at a time (to fuse it into the voxel the pixel's depth falls in), so the
message is row-major (h, w, C): each cell's C values are contiguous (DenseFeatures.msg). The
transpose costs one copy of a small array (30x40x512 fp16 = 1.2 MB at stride 16).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from .depth import GeometryError

FEATURE_ENCODING = "float16"


@dataclass(frozen=True)
class PackedFeatures:
    """The DenseFeatures fields besides header and label_set_version."""

    height: int
    width: int
    channels: int
    stride: int
    image_height: int
    image_width: int
    encoding: str
    data: bytes


def pack_features(features: np.ndarray, stride: int, image_hw: Tuple[int, int],
                  channels_first: bool = True) -> PackedFeatures:
    """(C, h, w) features of an image of size image_hw -> DenseFeatures fields (HWC, <f2).

    channels_first=False takes an (h, w, C) array (e.g. permuted on the GPU before the copy to
    the host), which is then packed without the transpose (at stride 2, 240x320x512, the transpose
    is most of the cost).

    Raises:
        GeometryError: not 3-D, stride < 1, or a grid other than ceil(image / stride).
    """
    f = np.asarray(features)
    if f.ndim != 3:
        raise GeometryError(f"features must be {'(C, h, w)' if channels_first else '(h, w, C)'}, "
                            f"got shape {f.shape}")
    c, h, w = f.shape if channels_first else (f.shape[2], f.shape[0], f.shape[1])
    ih, iw = (int(v) for v in image_hw)
    if int(stride) < 1:
        raise GeometryError(f"feature stride must be >= 1, got {stride}")
    want = (math.ceil(ih / stride), math.ceil(iw / stride))
    if (h, w) != want:
        raise GeometryError(f"features grid {h}x{w} does not match image {ih}x{iw} at stride {stride} "
                            f"(expected {want[0]}x{want[1]})")
    data = np.ascontiguousarray(f.transpose(1, 2, 0) if channels_first else f, dtype="<f2").tobytes()
    return PackedFeatures(h, w, c, int(stride), ih, iw, FEATURE_ENCODING, data)


def unpack_features(height: int, width: int, channels: int, encoding: str, data) -> np.ndarray:
    """DenseFeatures fields -> (height, width, channels) float16 array (a read-only view)."""
    if encoding != FEATURE_ENCODING:
        raise GeometryError(f"features encoding {encoding!r} is not supported (only {FEATURE_ENCODING!r})")
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, np.ndarray)) else data, np.uint8)
    need = int(height) * int(width) * int(channels) * 2
    if buf.size != need:
        raise GeometryError(f"features data has {buf.size} bytes, {height}x{width}x{channels} float16 needs {need}")
    return buf.view("<f2").reshape(int(height), int(width), int(channels))


def pack_embeddings(embeddings) -> Tuple[int, np.ndarray]:
    """(N, D) text embeddings (numpy, or a torch tensor's .numpy()) -> (D, flat float32 N*D)."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2:
        raise GeometryError(f"embeddings must be (N, D), got shape {e.shape}")
    return int(e.shape[1]), np.ascontiguousarray(e).reshape(-1)


def unpack_embeddings(dim: int, flat: Sequence[float]) -> np.ndarray:
    """(dim, flat) from LabelMap / EncodeTexts -> (N, dim) float32."""
    a = np.asarray(flat, dtype=np.float32)
    if dim <= 0:
        if a.size:
            raise GeometryError(f"embedding_dim is {dim} but {a.size} values are given")
        return a.reshape(0, 0)
    if a.size % dim:
        raise GeometryError(f"{a.size} embedding values are not a multiple of embedding_dim {dim}")
    return a.reshape(-1, dim)
