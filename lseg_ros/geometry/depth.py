"""Depth images (sensor_msgs/Image fields) -> metres, and where to sample them for colour pixels.

REP 118 depth encodings only: 16UC1 in millimetres, 32FC1 in metres. Anything else (mono16,
8-bit, 64-bit) is refused: a depth image whose unit is unknown would put points at wrong
distances without anyone noticing. 0, NaN and +-inf mean "no measurement" (REP 118); the range
test itself is done where the points are made (`semantic_cloud`), so the decoder never copies
more than needed.

Depth of another size than the colour image: an RGB-D driver's depth "aligned to colour" has the
colour camera's geometry, but some publish it at a lower resolution (e.g. 320x240 beside 640x480).
Such depth is sampled with nearest neighbour at the colour pixel centres (no interpolation: mixing
depths across an object border invents points in mid-air). A different aspect ratio means the
depth is not aligned to this colour image: refused.
"""
from __future__ import annotations

import functools
import sys
from typing import Tuple, Union

import numpy as np

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]

DEPTH_ENCODINGS: Tuple[str, ...] = ("16UC1", "32FC1")
_SCALE = {"16UC1": 0.001, "32FC1": 1.0}
_ITEM = {"16UC1": "u2", "32FC1": "f4"}
# Relative aspect-ratio difference accepted between depth and colour (rounding of odd sizes).
ASPECT_TOLERANCE = 0.02


class GeometryError(ValueError):
    """Input the 3D outputs cannot use (depth encoding, sizes, intrinsics); the message says why."""


def decode_depth(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
                 data: Buffer) -> np.ndarray:
    """sensor_msgs/Image fields of a depth image -> (H, W) float32 metres.

    16UC1 is converted (millimetres * 0.001), 32FC1 returned as is (a read-only view of `data`
    when rows are unpadded and the byte order is native). Invalid pixels keep their value
    (0 / NaN / inf); `semantic_cloud` skips them.

    Raises:
        GeometryError: an encoding other than 16UC1 / 32FC1 (named), empty image, step shorter
            than a row, data shorter than the image.
    """
    if encoding not in _SCALE:
        raise GeometryError(f"depth encoding {encoding!r} is not metric depth; supported: 16UC1 "
                            "(millimetres) and 32FC1 (metres), as ROS drivers publish (REP 118)")
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise GeometryError(f"empty depth image: {width}x{height} ({encoding})")
    item = np.dtype(_ITEM[encoding]).newbyteorder(">" if is_bigendian else "<")
    row = width * item.itemsize
    if step < row:
        raise GeometryError(f"depth step {step} is smaller than width * {item.itemsize} = {row} ({encoding})")
    buf = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    need = step * (height - 1) + row
    if buf.size < need:
        raise GeometryError(f"depth data has {buf.size} bytes, {encoding} {width}x{height} with step "
                            f"{step} needs {step * height}")
    if step == row:
        px = buf[:height * row].view(item).reshape(height, width)
    else:
        rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1), writeable=False)
        px = np.ascontiguousarray(rows).view(item).reshape(height, width)
    if encoding == "16UC1":
        return px.astype(np.float32) * np.float32(_SCALE[encoding])
    if item.byteorder not in ("=", "|") and item.byteorder != {"little": "<", "big": ">"}[sys.byteorder]:
        return px.astype(np.float32)
    return px


@functools.lru_cache(maxsize=32)
def sample_grid(depth_hw: Tuple[int, int], color_hw: Tuple[int, int],
                decimation: int = 1) -> Tuple[Union[slice, np.ndarray], Union[slice, np.ndarray]]:
    """Row and column indexers into the depth image for the colour pixels (v, u) with v, u
    multiples of `decimation`: `depth[rows, cols]` is (ceil(H/k), ceil(W/k)).

    Same size: plain slices (no copy). Other size, same aspect ratio: nearest neighbour at the
    colour pixel centres, index = floor((u + 0.5) * Wd / W). Cached per sizes.

    Raises:
        GeometryError: decimation < 1, or an aspect ratio that differs (depth not aligned to colour).
    """
    (dh, dw), (h, w) = depth_hw, color_hw
    k = int(decimation)
    if k < 1:
        raise GeometryError(f"decimation must be >= 1, got {decimation}")
    if (dh, dw) == (h, w):
        return slice(None, None, k), slice(None, None, k)
    if min(dh, dw, h, w) <= 0 or abs((dw / dh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
        raise GeometryError(f"depth {dw}x{dh} is not aligned to the {w}x{h} colour image (aspect ratio "
                            f"{dw / max(dh, 1):.3f} vs {w / max(h, 1):.3f}); publish depth registered "
                            "to the colour camera (e.g. aligned_depth_to_color)")
    rows = np.minimum(((np.arange(0, h, k) + 0.5) * (dh / h)).astype(np.intp), dh - 1)
    cols = np.minimum(((np.arange(0, w, k) + 0.5) * (dw / w)).astype(np.intp), dw - 1)
    rows.flags.writeable = cols.flags.writeable = False
    return rows[:, None], cols[None, :]
