"""ROS-free image conversion and visualisation for lseg_ros.

sensor_msgs/Image fields (encoding, height, width, step, is_bigendian, data) <-> numpy, decoding of
sensor_msgs/CompressedImage payloads, label palettes, colourised masks and overlays with a legend.
No rclpy import: the offline tools (lseg_ros/tools) use the same palette and overlay code.

Why not cv_bridge: the real ROS cv_bridge is not installable from PyPI (users of the PyPI ROS
wheels have none), and PyPI's `cv-bridge` port breaks on numpy 2 (`tostring`) and OpenCV 5
(`buffer is too small`) and maps 16UC1 to 8 bit without saying how. The converter below covers
every encoding lseg_node accepts, validates step and size, and never copies more than needed.

16-bit images (mono16, 16UC1, rgb16, ...): the model wants 8 bit. Single-channel 16-bit frames
(IR, thermal, depth-like sensors) rarely use the full 16-bit range, so `>> 8` would give a nearly
black picture; they are min-max stretched per frame to 0..255 (what rqt_image_view and
cv_bridge's cvtColorForDisplay do). Three-channel 16-bit colour is taken as full range: `>> 8`.
"""
from __future__ import annotations

import sys
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .image_header import HeaderError, read_header
from .legend import UNTRAINED_BANNER, decorate, draw_banner, draw_legend  # noqa: F401 (part of this module's API)

try:  # OpenCV is needed for compressed input, yuv422 and the overlay legend; the rest is numpy.
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
    cv2 = None

__all__ = [
    "ImageError", "SUPPORTED_ENCODINGS", "decode_image", "decode_compressed", "encode_image", "image_layout",
    "palette", "PALETTES", "colorize", "overlay", "decorate", "draw_legend",
]

Buffer = Union[bytes, bytearray, memoryview, "np.ndarray", Sequence[int]]


class ImageError(ValueError):
    """An image that cannot be converted; the message names the problem."""


# encoding -> (channels, bytes per channel, channel order of the first 3 channels, kind)
_ENCODINGS: Dict[str, Tuple[int, int, str]] = {
    "rgb8": (3, 1, "rgb"),
    "bgr8": (3, 1, "bgr"),
    "rgba8": (4, 1, "rgb"),
    "bgra8": (4, 1, "bgr"),
    "mono8": (1, 1, "mono"),
    "8UC1": (1, 1, "mono"),
    "8UC3": (3, 1, "bgr"),  # OpenCV's default order, as cv_bridge assumes
    "8UC4": (4, 1, "bgr"),
    "mono16": (1, 2, "mono"),
    "16UC1": (1, 2, "mono"),
    "rgb16": (3, 2, "rgb"),
    "bgr16": (3, 2, "bgr"),
    "rgba16": (4, 2, "rgb"),
    "bgra16": (4, 2, "bgr"),
    "yuv422": (2, 1, "uyvy"),  # UYVY (sensor_msgs image_encodings: YUV422 = "yuv422")
    "uyvy": (2, 1, "uyvy"),
    "yuv422_yuy2": (2, 1, "yuyv"),  # YUYV
    "yuyv": (2, 1, "yuyv"),
}
SUPPORTED_ENCODINGS: Tuple[str, ...] = tuple(_ENCODINGS)


def _stretch16(a: np.ndarray) -> np.ndarray:
    """Per-frame min-max of a 16-bit single-channel image to uint8 (a flat image gives 0)."""
    lo, hi = int(a.min()), int(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return ((a.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Buffer,
                 max_pixels: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """sensor_msgs/Image fields -> (HxWx3 uint8 image, channel order 'rgb' or 'bgr').

    The returned array may be a read-only view of `data` (no copy for rgb8/bgr8 with padding-free
    rows); the caller must not write into it. Alpha is dropped, mono is replicated to 3 channels,
    16-bit is reduced to 8 bit (see the module docstring).

    Raises:
        ImageError: unsupported encoding (the supported ones are listed), empty or too large
            image, step shorter than a row, data shorter than step * height.
    """
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, depth, order = _ENCODINGS[encoding]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height} ({encoding})")
    if max_pixels and height * width > max_pixels:
        raise ImageError(f"image too large: {width}x{height} = {height * width} pixels exceeds "
                         f"max_image_pixels={max_pixels}")
    row = width * channels * depth
    if step < row:
        raise ImageError(f"step {step} is smaller than width * bytes per pixel = {width} * {channels * depth} "
                         f"= {row} ({encoding})")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    need = step * (height - 1) + row  # the last row's padding may be absent
    if buf.size < need:
        raise ImageError(f"data has {buf.size} bytes, {encoding} {width}x{height} with step {step} needs "
                         f"{step * height}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1), writeable=False)
    if depth == 2:
        dt = np.dtype(">u2" if is_bigendian else "<u2")
        px = np.ascontiguousarray(rows).view(dt).reshape(height, width, channels)
        if channels == 1:
            img8 = _stretch16(px[:, :, 0])
        else:
            img8 = (px[:, :, :3] >> 8).astype(np.uint8)
    else:
        px = rows.reshape(height, width, channels)
        img8 = px[:, :, 0] if channels == 1 else px
    if order in ("uyvy", "yuyv"):
        if cv2 is None:
            raise ImageError(f"{encoding} needs OpenCV (opencv-python-headless)")
        if width % 2:
            raise ImageError(f"{encoding} needs an even width, got {width}")
        code = cv2.COLOR_YUV2RGB_UYVY if order == "uyvy" else cv2.COLOR_YUV2RGB_YUYV
        return cv2.cvtColor(np.ascontiguousarray(px), code), "rgb"
    if channels == 1 or order == "mono":
        return np.repeat(img8.reshape(height, width, 1), 3, axis=2), "rgb"
    if img8.shape[2] == 4:
        img8 = img8[:, :, :3]
    return img8, order


def decode_compressed(fmt: str, data: Buffer, max_pixels: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (format, data) -> (HxWx3 uint8 image, channel order).

    PNG, JPEG, WebP and BMP are accepted (told apart by their bytes, not by `fmt`); 'compressedDepth'
    (the depth plugin's PNG with a header) and other formats are refused. The size is read from the
    header (lseg_ros.image_header) and checked against max_pixels BEFORE cv2.imdecode runs: a
    decompression bomb is refused in microseconds, without allocating its pixels. 16-bit PNGs are
    reduced like decode_image does.
    """
    if cv2 is None:
        raise ImageError("compressed input needs OpenCV (opencv-python-headless)")
    if "compressedDepth" in (fmt or ""):
        raise ImageError(f"compressed format {fmt!r} (compressedDepth) is not a camera image; not supported")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise ImageError(f"compressed image is empty (format {fmt!r})")
    try:
        head = read_header(buf)
    except HeaderError as e:
        raise ImageError(f"corrupt or unsupported compressed image: {e} (format {fmt!r}, {buf.size} bytes)") from None
    if max_pixels and head.pixels > max_pixels:
        raise ImageError(f"image too large: {head.format} header says {head.width}x{head.height} = {head.pixels} "
                         f"pixels, exceeds max_image_pixels={max_pixels} (refused before decoding; "
                         f"{buf.size} bytes, format {fmt!r})")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes): {e}") from None
    if img is None or img.size == 0:
        raise ImageError(f"corrupt or unsupported compressed image ({head.format} {head.width}x{head.height}, "
                         f"format {fmt!r}, {buf.size} bytes)")
    h, w = img.shape[:2]
    if max_pixels and h * w > max_pixels:
        raise ImageError(f"image too large: {w}x{h} = {h * w} pixels exceeds max_image_pixels={max_pixels}")
    if img.dtype == np.uint16:
        img = _stretch16(img) if img.ndim == 2 else (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"compressed image decodes to {img.dtype}; only 8- and 16-bit images are supported")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2), "rgb"
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return img, "bgr"  # OpenCV decodes colour to BGR


def image_layout(array: np.ndarray, encoding: str) -> Tuple[int, int, int, bool, np.ndarray]:
    """numpy -> sensor_msgs/Image fields (height, width, step, is_bigendian) and the pixels as one
    C-contiguous array in the encoding's dtype (`array` itself when it already is: no copy).

    Encodings: mono8 (uint8 HxW), mono16 (uint16 HxW, native byte order), 32FC1 (float32 HxW),
    rgb8 / bgr8 (uint8 HxWx3).
    """
    spec = {"mono8": (np.uint8, 2), "mono16": (np.uint16, 2), "32FC1": (np.float32, 2),
            "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3)}
    if encoding not in spec:
        raise ImageError(f"cannot encode {encoding!r}; supported: {', '.join(spec)}")
    dtype, ndim = spec[encoding]
    a = np.asarray(array)
    if a.ndim != ndim or (ndim == 3 and a.shape[2] != 3):
        raise ImageError(f"{encoding} needs a {'HxW' if ndim == 2 else 'HxWx3'} array, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    h, w = a.shape[:2]
    return h, w, a.strides[0], sys.byteorder == "big" and a.itemsize > 1, a


def encode_image(array: np.ndarray, encoding: str) -> Tuple[int, int, int, bool, bytes]:
    """image_layout with the pixels as bytes (height, width, step, is_bigendian, data)."""
    h, w, step, big, a = image_layout(array, encoding)
    return h, w, step, big, a.tobytes()


# ---- palettes, masks, overlays ------------------------------------------------------------------

def unlabeled_id(num_labels: int) -> int:
    """The mask value meaning "unlabeled" (vision_msgs convention): 255 for mono8 masks, which hold
    up to 254 labels besides it, else 65535 (mono16)."""
    return 255 if num_labels <= 254 else 65535


def class_mask(mask: np.ndarray, confidence: np.ndarray, num_labels: int,
               min_confidence: float = 0.0) -> Tuple[np.ndarray, str]:
    """Class ids as published: uint8 ("mono8") or uint16 ("mono16") by label count, pixels whose
    winning probability is below min_confidence set to unlabeled_id(num_labels)."""
    unlabeled = unlabeled_id(num_labels)
    out = mask.astype(np.uint8 if unlabeled == 255 else np.uint16)
    if min_confidence > 0:
        out[confidence < min_confidence] = unlabeled
    return out, "mono8" if unlabeled == 255 else "mono16"


def _voc(n: int) -> np.ndarray:
    """PASCAL VOC's bit-interleaved colour map, starting at its entry 1 (entry 0 is black)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i + 1, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def _golden_hsv(n: int) -> np.ndarray:
    """Hues spread by the golden ratio, full saturation: adjacent ids get distant colours."""
    h = (np.arange(n) * 0.618033988749895) % 1.0
    s = np.where(np.arange(n) % 2 == 0, 0.85, 0.65)
    v = np.where(np.arange(n) % 3 == 2, 0.75, 0.95)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.stack([np.choose(i, [row[k] for row in table]) for k in range(3)], axis=1)
    return (rgb * 255 + 0.5).astype(np.uint8)


_TAB20 = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229)], np.uint8)

PALETTES: Tuple[str, ...] = ("voc", "tab20", "hsv")


def palette(n: int, name: str = "voc") -> np.ndarray:
    """(n, 3) uint8 RGB colours for class ids 0..n-1.

    name: 'voc' (PASCAL VOC colour map without its black entry; the look of LSeg's demo),
    'tab20' (matplotlib's tab20, repeated past 20), 'hsv' (golden-ratio hues, distinct for any n).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if name == "voc":
        return _voc(n)
    if name == "tab20":
        return _TAB20[np.arange(n) % len(_TAB20)].copy()
    if name == "hsv":
        return _golden_hsv(n)
    raise ValueError(f"unknown palette {name!r}; choose one of {', '.join(PALETTES)}")


def colorize(mask: np.ndarray, colors: np.ndarray, unlabeled_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """(H, W) integer class ids -> (H, W, 3) uint8 RGB; ids outside the palette get unlabeled_color."""
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    mask = np.asarray(mask)
    if mask.dtype == np.uint8 and cv2 is not None:  # the node's usual mask: a 256-entry table (cv2.LUT, ~5x faster)
        lut = np.empty((1, 256, 3), np.uint8)
        lut[0, :] = np.asarray(unlabeled_color, np.uint8)
        lut[0, :min(256, len(colors))] = colors[:256]
        return cv2.LUT(cv2.merge([mask, mask, mask]), lut)
    lut = np.concatenate([colors, np.asarray(unlabeled_color, np.uint8).reshape(1, 3)])
    ids = mask.astype(np.int64, copy=False)
    ids = np.where((ids >= 0) & (ids < len(colors)), ids, len(colors))
    return lut[ids]


def overlay(image_rgb: np.ndarray, mask: np.ndarray, colors: np.ndarray, names: Optional[Sequence[str]] = None,
            alpha: float = 0.5, legend: bool = True, legend_present_only: Optional[bool] = None,
            banner: Optional[str] = None) -> np.ndarray:
    """Blend the mask's colours over an RGB image; returns a new (H, W, 3) uint8 RGB image.

    Pixels whose id is outside the palette (the unlabeled value 255/65535) keep the image.
    legend: draw `names` with their colours in the top-left corner; legend_present_only lists
    only the classes present in the mask (default: when there are more than 12 names).
    banner: a warning written across the bottom (e.g. "UNTRAINED WEIGHTS").
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image_rgb must be HxWx3 uint8, got {img.shape} {img.dtype}")
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    labeled = (mask >= 0) & (mask < len(colors))
    if cv2 is not None:
        out = cv2.addWeighted(img, 1.0 - alpha, colorize(mask, colors), alpha, 0.0)
    else:  # pragma: no cover
        color = colorize(mask, colors).astype(np.float32)
        out = (img * (1.0 - alpha) + color * alpha + 0.5).astype(np.uint8)
    if not labeled.all():  # unlabeled pixels keep the image (skipped when all are labeled: the usual case)
        np.copyto(out, img, where=~labeled[:, :, None])
    counts = None
    if legend and names and (len(names) > 12 if legend_present_only is None else legend_present_only):
        counts = np.bincount(mask[labeled].ravel().astype(np.int64), minlength=len(names))
    return decorate(out, names if legend else None, colors, counts, banner, legend_present_only)
