"""End-to-end rate and stamp-to-publish latency of lseg_node on a 640x480 stream, against the bare
Predictor on the same frame in the same run (node overhead = the difference).

    .venv/bin/python benchmarks/bench_node.py --model tiny_vit --duration 20
    .venv/bin/python benchmarks/bench_node.py --model vitl16 --duration 90   # untrained ViT-L/16
    --json FILE writes the figures (benchmarks/run.py merges them into its results)

1. lseg_node (separate process, the given model, untrained) gets a 30 Hz 640x480 rgb8 stream of a
   real photo from this process (reliable, as camera drivers publish); this process subscribes to
   lseg/mask, lseg/overlay (as rviz would) and lseg/class_confidences. Reported: output rate, latency
   = arrival of class_confidences minus the input stamp (same host clock), and the node's own
   /diagnostics (inference time, stamp-to-publish latency, dropped frames).
2. The node is stopped; the same photo goes through Predictor.predict in this process, same model,
   same torch thread count, for as many frames: the bare model's rate and time per frame.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of streaming (after the first output)")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--domain", type=int, default=91)
    ap.add_argument("--bare-frames", type=int, default=0, help="bare predictor frames (default: as many as the node did)")
    ap.add_argument("--precision", default="fp32", help="node parameter and bare Predictor precision (same for both)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()

    import numpy as np
    import rclpy
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences
    from ros_harness import NodeProcess, diagnostics_value, image_msg, photo, wait_for

    env = dict(os.environ, ROS_DOMAIN_ID=str(a.domain), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    img = photo(a.width, a.height)
    node = NodeProcess(env, params=(f"model:={a.model}", "device:=cpu", "heatmap_labels:=[person]",
                                    f"precision:={a.precision}"))
    ctx = Context()
    rclpy.init(context=ctx, domain_id=a.domain)
    n = rclpy.create_node("bench", context=ctx)
    arrivals, diags = [], []
    n.create_subscription(ClassConfidences, "lseg/class_confidences", lambda m: arrivals.append((time.time(), m)), 50)
    n.create_subscription(Image, "lseg/mask", lambda m: None, 2)
    n.create_subscription(Image, "lseg/overlay", lambda m: None, 2)
    n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pub = n.create_publisher(Image, "image", QoSProfile(depth=5))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)
    try:
        node.wait_ready(timeout=600)
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "node subscribed")
        sent = 0
        t0 = time.monotonic()

        def tick():
            nonlocal sent
            pub.publish(image_msg(img, "rgb8", n.get_clock().now().to_msg()))
            sent += 1
        n.create_timer(1.0 / a.rate, tick)
        while not arrivals and time.monotonic() - t0 < 600:  # warm-up: first output
            ex.spin_once(timeout_sec=0.01)
        arrivals.clear()
        diags.clear()
        sent, t_start = 0, time.monotonic()
        while time.monotonic() - t_start < a.duration:
            ex.spin_once(timeout_sec=0.01)
        elapsed = time.monotonic() - t_start
        lat = [t - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec) for t, m in arrivals]
        frames = len(arrivals)
        d = {k: diagnostics_value(diags, k) for k in ("frames_received", "dropped_overwritten", "device")}
        for k in ("inference_ms_mean", "publish_ms_mean", "latency_ms_mean", "latency_ms_max"):
            vals = [float(v) for v in (diagnostics_value([m], k) for m in diags) if v]
            d[k] = f"{(max(vals) if k.endswith('max') else statistics.mean(vals)):.0f}" if vals else "-"
    finally:
        node.stop()
        ex.shutdown()
        n.destroy_node()
        rclpy.try_shutdown(context=ctx)

    from lseg_ros.model import LSegConfig, LSegNet, Predictor
    pred = Predictor(LSegNet.from_config(getattr(LSegConfig, a.model)()), device="cpu", precision=a.precision)
    labels = pred.encode_labels(["floor", "wall", "person", "other"])
    k = a.bare_frames or max(3, frames)
    times = []

    def bare_loop():  # in a non-main thread, as the node's worker (OpenMP behaves differently in the main thread)
        pred.predict(img, labels)  # warm-up
        for _ in range(k):
            t = time.perf_counter()
            pred.predict(img, labels, want_probs=[2])  # the node publishes one heatmap (person)
            times.append(time.perf_counter() - t)
    import threading
    th = threading.Thread(target=bare_loop)
    th.start()
    th.join()
    bare = statistics.median(times)

    print(f"model {a.model} (untrained), {a.width}x{a.height} rgb8 at {a.rate:.0f} Hz, CPU, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores")
    print(f"node:  {frames} frames in {elapsed:.1f} s = {frames / elapsed:.2f} Hz out; "
          f"stamp->arrival latency median {1000 * statistics.median(lat):.0f} ms, "
          f"p95 {1000 * float(np.percentile(lat, 95)):.0f} ms, max {1000 * max(lat):.0f} ms")
    print(f"       node diagnostics (mean over the run): inference {d['inference_ms_mean']} ms, mask+overlay+"
          f"encoding+publishing {d['publish_ms_mean']} ms, stamp->publish "
          f"{d['latency_ms_mean']} ms (max {d['latency_ms_max']}), received {d['frames_received']}, "
          f"overwritten {d['dropped_overwritten']}")
    print(f"bare Predictor.predict (one heatmap, same frame): median {1000 * bare:.0f} ms = {1 / bare:.2f} Hz "
          f"over {k} frames")
    period = elapsed / max(frames, 1)
    print(f"node overhead: {1000 * (period - bare):.0f} ms per frame on the period "
          f"({100 * (period - bare) / bare:.0f}%), {1000 * (statistics.median(lat) - bare):.0f} ms on latency")
    if a.json:
        p50, p95 = (float(np.percentile(lat, q)) if lat else None for q in (50, 95))
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "untrained": True, "precision": a.precision, "device": "cpu",
                       "input": f"{a.width}x{a.height} rgb8 at {a.rate:g} Hz", "torch_threads": torch.get_num_threads(),
                       "node_frames": frames, "node_seconds": elapsed, "node_fps": frames / elapsed,
                       "latency_s_p50": p50, "latency_s_p95": p95, "latency_s_max": max(lat) if lat else None,
                       "node_diagnostics": d, "bare_seconds_median": bare, "bare_fps": 1 / bare,
                       "node_period_over_bare": period / bare}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
