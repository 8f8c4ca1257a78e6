"""The overlay's legend (top left: a swatch and a name per class) and banner (a warning across the
bottom), drawn with OpenCV over their own small regions only.

`decorate` draws both from a cache: a legend or banner is rendered once per label set, palette and image
size (and, for present-only legends, set of classes shown) into an alpha-and-colour layer, then blended
into each frame's overlay (the legend darkens what is under it, so its layer is kept as coverage and
premultiplied colour: one small blend per frame instead of drawing text, 1 ms per 640x480 frame).
The result equals drawing directly (draw_legend / draw_banner) within one level (tested).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
    cv2 = None

UNTRAINED_BANNER = "UNTRAINED WEIGHTS - meaningless masks"


def draw_legend(image_rgb: np.ndarray, names: Sequence[str], colors: np.ndarray,
                ids: Optional[Sequence[int]] = None, max_rows: int = 24) -> np.ndarray:
    """Draws a swatch + name box per class into the top-left corner (in place; returns the image).

    ids: which classes to list (default all); beyond max_rows the list is cut with '+k more'.
    The text height follows the image height, so the legend stays legible at any resolution.
    """
    if cv2 is None or len(names) == 0:
        return image_rgb
    ids = list(range(len(names))) if ids is None else list(ids)
    h, w = image_rgb.shape[:2]
    scale = max(0.35, min(1.2, h / 900.0))
    thick = 1 if scale < 0.8 else 2
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row_h = th + base + 4
    shown = ids[:max_rows] if len(ids) <= max_rows else ids[:max_rows - 1]
    lines = [(names[i], colors[i]) for i in shown]
    if len(shown) < len(ids):
        lines.append((f"+{len(ids) - len(shown)} more", None))
    text_w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t, _ in lines)
    box_w, box_h = min(w, row_h + 8 + text_w + 6), min(h, row_h * len(lines) + 6)
    region = image_rgb[:box_h, :box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken for contrast
    for k, (text, col) in enumerate(lines):
        y0 = 3 + k * row_h
        if col is not None:
            cv2.rectangle(image_rgb, (4, y0 + 2), (4 + row_h - 4, y0 + row_h - 2), tuple(int(c) for c in col), -1)
        cv2.putText(image_rgb, text, (row_h + 6, y0 + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return image_rgb



@functools.lru_cache(maxsize=16)
def _legend_layer(names: Tuple[str, ...], colors: bytes, ids: Optional[Tuple[int, ...]], h: int, w: int):
    """(box height, box width, coverage, premultiplied colour) of the legend drawn over a black frame
    of h x w: drawn once over black and once over white, which gives both per pixel."""
    cols = np.frombuffer(colors, np.uint8).reshape(-1, 3)
    over = []
    for bg in (0, 255):
        canvas = np.full((h, w, 3), bg, np.uint8)
        # the legend darkens its box (x * 2 // 5): over black that is 0, over white 102; undo it below
        draw_legend(canvas, list(names), cols, list(ids) if ids is not None else None)
        over.append(canvas.astype(np.float32))
    ys, xs = np.nonzero((over[0] != 0).any(2) | (over[1] != 255).any(2))
    if not len(ys):
        return 0, 0, None, None
    bh, bw = int(ys.max()) + 1, int(xs.max()) + 1
    black, white = over[0][:bh, :bw], over[1][:bh, :bw]
    # result = dark * (1 - a) + premult, with dark = 0 (black) or 102 (white, 255 * 2 // 5)
    alpha = 1.0 - (white - black) / 102.0
    return bh, bw, alpha.clip(0, 1), black


@functools.lru_cache(maxsize=8)
def _banner_strip(text: str, h: int, w: int) -> Tuple[int, np.ndarray]:
    """(first row, pixels) of the banner on an h x w frame (it paints its whole strip)."""
    canvas = np.zeros((h, w, 3), np.uint8)
    draw_banner(canvas, text)
    rows = np.nonzero(canvas.any(axis=(1, 2)))[0]
    y0 = int(rows.min()) if len(rows) else h
    return y0, canvas[y0:].copy()


def decorate(overlay_rgb: np.ndarray, names: Optional[Sequence[str]], colors: np.ndarray,
             counts: Optional[np.ndarray] = None, banner: Optional[str] = None,
             legend_present_only: Optional[bool] = None) -> np.ndarray:
    """The legend (top left) and the banner (bottom strip) drawn into an overlay, in place: only their
    own small regions are touched. names None: no legend. With present-only legends (default: more than
    12 names) `counts` (pixels per class) picks and orders the classes listed; None lists them all."""
    h, w = overlay_rgb.shape[:2]
    if names and cv2 is not None:
        present_only = len(names) > 12 if legend_present_only is None else legend_present_only
        ids = None
        if present_only and counts is not None:
            counts = np.asarray(counts)
            ids = tuple(int(i) for i in np.argsort(-counts[:len(names)], kind="stable") if counts[i] > 0)
        cols = np.ascontiguousarray(np.asarray(colors, np.uint8).reshape(-1, 3)[:len(names)])
        bh, bw, alpha, premult = _legend_layer(tuple(names), cols.tobytes(), ids, h, w) if ids != () else (0,) * 4
        if bh:
            box = overlay_rgb[:bh, :bw]
            dark = (box.astype(np.uint16) * 2 // 5).astype(np.float32)
            box[:] = np.clip(dark * (1.0 - alpha) + premult + 0.5, 0, 255).astype(np.uint8)
    if banner and cv2 is not None:
        y0, strip = _banner_strip(banner, h, w)
        overlay_rgb[y0:] = strip
    return overlay_rgb


UNTRAINED_BANNER = "UNTRAINED WEIGHTS - meaningless masks"


def draw_banner(image_rgb: np.ndarray, text: str) -> np.ndarray:
    """White text on a red strip across the bottom of the image (in place; returns the image)."""
    if cv2 is None:  # pragma: no cover
        return image_rgb
    h, w = image_rgb.shape[:2]
    scale = max(0.4, min(1.5, h / 600.0))
    thick = 1 if scale < 0.8 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    strip = th + base + 8
    image_rgb[max(0, h - strip):] = (200, 0, 0)
    cv2.putText(image_rgb, text, (max(2, (w - tw) // 2), h - base - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thick, cv2.LINE_AA)
    return image_rgb
