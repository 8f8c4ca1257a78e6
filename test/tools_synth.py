"""Synthetic coloured-shapes datasets for the tools tests (generated, nothing downloaded)."""
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["background", "red square", "green circle"]


def make_shapes(root: Path, n: int, seed: int = 0, size: int = 64) -> Path:
    """n images: noisy bluish background, one red square (class 1), one green disc (class 2)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        img[..., 2] += np.uint8(rng.integers(0, 120))
        mask = np.zeros((size, size), np.uint8)
        s = int(rng.integers(14, 26))
        x, y = (int(v) for v in rng.integers(0, size - s, 2))
        img[y:y + s, x:x + s] = (220, 30, 30)
        mask[y:y + s, x:x + s] = 1
        r = int(rng.integers(7, 13))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        cv2.circle(img, (cx, cy), r, (30, 210, 40), -1)
        cv2.circle(mask, (cx, cy), r, 2, -1)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), img[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), mask)
    return root
