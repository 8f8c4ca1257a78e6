"""Per-frame cost of the 3D outputs' ROS-free parts (lseg_ros.geometry) at a given size.

Prints milliseconds per frame (best of --repeat, and the median) for: 16UC1 depth decoding, the
semantic point cloud at decimations 1/2/4 (unorganized and organized), the PointCloud2 data bytes,
and dense-feature packing at stride 16 and 2. One process, one thread; figures from a shared
machine are ratios at best.

    .venv/bin/python -m benchmarks bench_geometry [--height 480 --width 640 --repeat 30] [--model tiny_vit]

--model also times the model library's Predictor.predict on the same frame (untrained weights of
that config, CPU, 20 labels), without and with features_stride=16, and prints the 3D costs as a
share of it (the budget, docs/3d.md: <= 15 % each at 480x640, k=1, tiny model).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from lseg_ros import geometry as g  # noqa: E402  (the source tree: run as a module from the repository root)


def timed(fn, repeat: int):
    fn()  # warm caches (ray grids, sample grids)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--model", help="also time Predictor.predict with this config (e.g. tiny_vit)")
    args = ap.parse_args()
    h, w = args.height, args.width
    rng = np.random.default_rng(0)
    # A room-like scene: depth rising from 0.8 m (bottom) to 4.5 m (top) with clustered holes
    # (blocks of 0, as reflective or far surfaces give), 20 labels in regions, smooth confidence;
    # and a worst case with 10 % holes and low-confidence pixels scattered at random.
    v = np.linspace(4.5, 0.8, h, dtype=np.float32)[:, None]
    depth_mm = np.broadcast_to(v * 1000, (h, w)).astype(np.uint16)
    for y, x in rng.integers(0, [h - 40, w - 40], (20, 2)):
        depth_mm[y:y + 40, x:x + 40] = 0
    scatter_mm = depth_mm.copy()
    scatter_mm[rng.random((h, w)) < 0.1] = 0
    raw = depth_mm.tobytes()
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = ((np.arange(h)[:, None] // 60) * 5 + np.arange(w)[None, :] // 160).astype(np.uint8)
    conf = np.broadcast_to(np.linspace(0.1, 0.9, w, dtype=np.float32), (h, w)).copy()
    mask = np.where(conf < 0.3, np.uint8(255), labels)        # imaging.class_mask's output
    noisy_conf = rng.random((h, w), dtype=np.float32)
    intr = g.Intrinsics.from_k([0.8 * w, 0, (w - 1) / 2, 0, 0.8 * w, (h - 1) / 2, 0, 0, 1], w, h)
    depth = g.decode_depth("16UC1", h, w, 2 * w, False, raw)
    scattered = g.decode_depth("16UC1", h, w, 2 * w, False, scatter_mm.tobytes())
    rows = [("decode 16UC1", lambda: g.decode_depth("16UC1", h, w, 2 * w, False, raw))]
    for k in (1, 2, 4):
        rows.append((f"cloud k={k}", lambda k=k: g.semantic_cloud(
            depth, intr, rgb, mask, conf, decimation=k, max_range=5.0, unlabeled_id=255)))
    rows.append(("cloud k=1 + data bytes", lambda: g.semantic_cloud(
        depth, intr, rgb, mask, conf, max_range=5.0, unlabeled_id=255).data))
    rows.append(("cloud k=1 drop unlabeled", lambda: g.semantic_cloud(
        depth, intr, rgb, mask, conf, max_range=5.0, unlabeled_id=255, drop_unlabeled=True)))
    rows.append(("cloud k=1 organized", lambda: g.semantic_cloud(
        depth, intr, rgb, mask, conf, max_range=5.0, unlabeled_id=255, organized=True)))
    rows.append(("cloud k=1 scattered holes+threshold", lambda: g.semantic_cloud(
        scattered, intr, rgb, labels, noisy_conf, max_range=5.0, min_confidence=0.3, unlabeled_id=255)))
    for s in (16, 2):
        f = rng.standard_normal((512, -(-h // s), -(-w // s))).astype(np.float16)
        rows.append((f"features stride {s} ({f.shape[1]}x{f.shape[2]}x512)",
                     lambda f=f, s=s: g.pack_features(f, s, (h, w))))
    n = g.semantic_cloud(depth, intr, rgb, mask, conf, max_range=5.0).width
    print(f"lseg_ros.geometry at {w}x{h}, {n} valid points at k=1 (best / median ms of {args.repeat}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    results = {}
    for name, fn in rows:
        best, med = timed(fn, args.repeat)
        results[name] = best
        print(f"  {name:40s} {best:7.2f} {med:7.2f}")
    if args.model:
        model_share(args, rgb, results)


def model_share(args, rgb: np.ndarray, results: dict) -> None:
    """The model's per-frame time on the same frame and the 3D parts as a share of it."""
    import torch

    from lseg_ros.model import Predictor
    from lseg_ros.tools.common import load_net

    torch.set_num_threads(1)
    pred = Predictor(load_net(None, args.model, "cpu"), device="cpu")
    labels = pred.encode_labels([f"class {i}" for i in range(20)])
    repeat = max(4, args.repeat // 5)
    plain_t, feat_t = [], []
    pred.predict(rgb, labels, features_stride=16)
    for _ in range(repeat):            # interleaved, so that other load hits both alike
        for fn, acc in ((lambda: pred.predict(rgb, labels), plain_t),
                        (lambda: pred.predict(rgb, labels, features_stride=16), feat_t)):
            t = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t) * 1e3)
    plain, with_f = min(plain_t), min(feat_t)
    print(f"  {'Predictor.predict ' + args.model:40s} {plain:7.2f} {statistics.median(plain_t):7.2f}")
    print(f"  {'  ... with features_stride=16':40s} {with_f:7.2f} {statistics.median(feat_t):7.2f}")
    cloud = results["cloud k=1 + data bytes"]            # best times: the least disturbed by other load
    feats = results[next(k for k in results if k.startswith("features stride 16"))]
    print(f"  share of predict: cloud k=1 + bytes {100 * cloud / plain:.1f} %, features stride 16 "
          f"{100 * ((with_f - plain) + feats) / plain:.1f} % (model side {with_f - plain:.2f} ms + packing)")


if __name__ == "__main__":
    main()
