"""Pinhole intrinsics from sensor_msgs/CameraInfo values.

Distortion is assumed corrected: depth aligned to colour by an RGB-D driver is produced in a
rectified (or distortion-free) colour geometry, and the colour image lseg_node segments is the one
the depth is aligned to. D is therefore ignored; feed `image_rect_color` and its camera_info when a
camera's raw image is distorted. K (the raw camera matrix) is used by default; for images
rectified by image_proc, P's left 3x3 holds the rectified camera's intrinsics (`from_p`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .depth import GeometryError


@dataclass(frozen=True)
class Intrinsics:
    """fx, fy, cx, cy in pixels for an image of width x height (pixel centres at integer u, v)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "Intrinsics":
        """From CameraInfo.k (3x3 row-major, 9 values) and CameraInfo.width/height.

        Raises:
            GeometryError: not 9 finite values, zero or negative focal length, empty size.
        """
        return cls._from_matrix(k, 9, 3, "K", width, height)

    @classmethod
    def from_p(cls, p: Sequence[float], width: int, height: int) -> "Intrinsics":
        """From CameraInfo.p (3x4 row-major, 12 values): the rectified image's intrinsics."""
        return cls._from_matrix(p, 12, 4, "P", width, height)

    @classmethod
    def _from_matrix(cls, m: Sequence[float], size: int, cols: int, name: str, width: int,
                     height: int) -> "Intrinsics":
        a = np.asarray(m, dtype=np.float64).reshape(-1)
        if a.size != size:
            raise GeometryError(f"camera_info {name} must have {size} values, got {a.size}")
        fx, cx, fy, cy = a[0], a[2], a[cols + 1], a[cols + 2]
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)):
            raise GeometryError(f"camera_info {name} has non-finite values: {a.tolist()}")
        if fx <= 0 or fy <= 0:
            raise GeometryError(f"camera_info {name} has focal length fx={fx}, fy={fy}: must be > 0 "
                                "(an uncalibrated camera publishes zeros)")
        if int(width) < 0 or int(height) < 0:
            raise GeometryError(f"camera_info size {width}x{height} is negative")
        return cls(float(fx), float(fy), float(cx), float(cy), int(width), int(height))

    def for_image(self, width: int, height: int) -> "Intrinsics":
        """These intrinsics for an image of width x height.

        The same size (or camera_info without a size, 0x0) returns them unchanged; a scaled image
        of the same aspect ratio (image_proc's resize, a driver's lower resolution) scales them
        about the pixel centres: u' = (u + 0.5) * s - 0.5.

        Raises:
            GeometryError: a different aspect ratio (this camera_info belongs to another image).
        """
        width, height = int(width), int(height)
        if (self.width, self.height) in ((width, height), (0, 0)):
            return self if (self.width, self.height) == (width, height) else Intrinsics(
                self.fx, self.fy, self.cx, self.cy, width, height)
        sx, sy = width / self.width if self.width else 0.0, height / self.height if self.height else 0.0
        if sx <= 0 or sy <= 0 or abs(sx / sy - 1.0) > 0.02:
            raise GeometryError(f"camera_info is for {self.width}x{self.height}, the image is {width}x{height} "
                                "(another aspect ratio): not the camera_info of this image")
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)
