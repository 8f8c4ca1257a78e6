"""End-to-end rate and stamp-to-publish latency of lseg_node on a 640x480 stream, against the bare
Predictor on the same frame in the same run (node overhead = the difference).

    .venv/bin/python benchmarks/bench_node.py --model tiny_vit --duration 20
    .venv/bin/python benchmarks/bench_node.py --model vitl16 --duration 90   # untrained ViT-L/16
    --json FILE writes the figures (benchmarks/run.py merges them into its results)

Rounds (--rounds, default 4), so that the machine's drifts hit both sides alike:
1. the node (separate process, the given model, untrained) gets a 30 Hz 640x480 rgb8 stream of a real
   photo from this process (reliable, as camera drivers publish) for duration/rounds seconds; this
   process subscribes to `--outputs` (default lseg/mask, lseg/overlay as rviz would,
   lseg/heatmap/person) and lseg/class_confidences;
2. the stream stops (the node idles), and the same photo goes through Predictor.predict in this
   process (same model, torch thread count and heatmap) for as many frames as the node delivered.
Reported: the node's output rate, its period over the bare time per frame (per round and the median),
latency = arrival of class_confidences minus the input stamp (same host clock), and the node's own
/diagnostics (inference time, publishing time, stamp-to-publish latency, received and dropped frames).
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of streaming (after the first output), "
                    "split into --rounds rounds, each followed by the bare model for as many frames")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--domain", type=int, default=91)
    ap.add_argument("--bare-frames", type=int, default=0, help="bare predictor frames (default: as many as the node did)")
    ap.add_argument("--precision", default="fp32", help="node parameter and bare Predictor precision (same for both)")
    ap.add_argument("--outputs", default="mask,overlay,heatmap,class_confidences",
                    help="what this process subscribes to (class_confidences always): mask, overlay, heatmap")
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
    outputs = {o.strip() for o in a.outputs.split(",") if o.strip()} | {"class_confidences"}
    for name, topic in (("mask", "lseg/mask"), ("overlay", "lseg/overlay"), ("heatmap", "lseg/heatmap/person")):
        if name in outputs:
            n.create_subscription(Image, topic, lambda m: None, 2)
    n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pub = n.create_publisher(Image, "image", QoSProfile(depth=5))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)

    from lseg_ros.model import LSegConfig, LSegNet, Predictor
    pred = Predictor(LSegNet.from_config(getattr(LSegConfig, a.model)()), device="cpu", precision=a.precision)
    labels = pred.encode_labels(["floor", "wall", "person", "other"])
    want = [2] if "heatmap" in outputs else False  # the node computes the person heatmap when it is subscribed
    times: list = []

    def bare(k: int) -> None:  # in a non-main thread, as the node's worker (OpenMP differs in the main thread)
        def loop():
            for _ in range(k):
                t = time.perf_counter()
                pred.predict(img, labels, want_probs=want)
                times.append(time.perf_counter() - t)
        th = threading.Thread(target=loop)
        th.start()
        th.join()

    streaming = False
    lat, periods, bare_rounds, elapsed, frames = [], [], [], 0.0, 0
    try:
        node.wait_ready(timeout=600)
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "node subscribed")

        def tick():
            if streaming:
                pub.publish(image_msg(img, "rgb8", n.get_clock().now().to_msg()))
        n.create_timer(1.0 / a.rate, tick)
        streaming, t0 = True, time.monotonic()
        while not arrivals and time.monotonic() - t0 < 600:  # warm-up: first output
            ex.spin_once(timeout_sec=0.01)
        bare(2)  # the bare model's warm-up (the node is idle meanwhile: no frames)
        times.clear()
        arrivals.clear()
        diags.clear()
        for r in range(a.rounds):
            streaming, t_start = True, time.monotonic()
            first = len(arrivals)
            while time.monotonic() - t_start < a.duration / a.rounds:
                ex.spin_once(timeout_sec=0.01)
            streaming = False
            dt = time.monotonic() - t_start
            got = len(arrivals) - first
            elapsed, frames = elapsed + dt, frames + got
            periods.append(dt / max(got, 1))
            end = time.monotonic() + 1.0  # the frame in hand finishes; the node then idles
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)
            k = len(times)
            bare(a.bare_frames or max(3, got))
            bare_rounds.append(statistics.median(times[k:]))
            print(f"round {r + 1}/{a.rounds}: node {got} frames in {dt:.1f} s = {got / dt:.2f} Hz, bare "
                  f"{1000 * bare_rounds[-1]:.0f} ms/frame: period/bare x{periods[-1] / bare_rounds[-1]:.2f}", flush=True)
        lat = [t - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec) for t, m in arrivals]
        d = {k: diagnostics_value(diags, k) for k in ("frames_received", "dropped_overwritten", "device")}
        stages = [v for v in (diagnostics_value([m], "node_stages_ms_per_frame") for m in diags) if v]
        d["node_stages_ms_per_frame"] = stages[len(stages) // 2] if stages else "-"  # a mid-run period
        for k in ("inference_ms_mean", "publish_ms_mean", "latency_ms_mean", "latency_ms_max"):
            vals = [float(v) for v in (diagnostics_value([m], k) for m in diags) if v]
            d[k] = f"{(max(vals) if k.endswith('max') else statistics.mean(vals)):.0f}" if vals else "-"
    finally:
        node.stop()
        ex.shutdown()
        n.destroy_node()
        rclpy.try_shutdown(context=ctx)
    bare = statistics.median(times)
    k = len(times)
    ratio = statistics.median(p / b for p, b in zip(periods, bare_rounds))

    print(f"model {a.model} (untrained), {a.width}x{a.height} rgb8 at {a.rate:.0f} Hz, CPU, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores")
    print(f"node:  {frames} frames in {elapsed:.1f} s = {frames / elapsed:.2f} Hz out; "
          f"stamp->arrival latency median {1000 * statistics.median(lat):.0f} ms, "
          f"p95 {1000 * float(np.percentile(lat, 95)):.0f} ms, max {1000 * max(lat):.0f} ms")
    print(f"       node diagnostics (mean over the run): inference {d['inference_ms_mean']} ms, mask+overlay+"
          f"encoding+publishing {d['publish_ms_mean']} ms, stamp->publish "
          f"{d['latency_ms_mean']} ms (max {d['latency_ms_max']}), received {d['frames_received']}, "
          f"overwritten {d['dropped_overwritten']}")
    print(f"       node's own work per frame (diagnostics, one mid-run period), ms: {d['node_stages_ms_per_frame']}")
    print(f"outputs subscribed: {', '.join(sorted(outputs))}")
    print(f"bare Predictor.predict ({'one heatmap, ' if 'heatmap' in outputs else ''}same frame): median {1000 * bare:.0f} ms = {1 / bare:.2f} Hz "
          f"over {k} frames")
    period = elapsed / max(frames, 1)
    print(f"node period / bare time per frame: x{ratio:.2f} (median of {a.rounds} rounds); node overhead "
          f"{1000 * (period - bare):.0f} ms per frame on the period, {1000 * (statistics.median(lat) - bare):.0f} ms on latency")
    if a.json:
        p50, p95 = (float(np.percentile(lat, q)) if lat else None for q in (50, 95))
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "untrained": True, "precision": a.precision, "device": "cpu",
                       "input": f"{a.width}x{a.height} rgb8 at {a.rate:g} Hz", "outputs": sorted(outputs), "torch_threads": torch.get_num_threads(),
                       "node_frames": frames, "node_seconds": elapsed, "node_fps": frames / elapsed,
                       "latency_s_p50": p50, "latency_s_p95": p95, "latency_s_max": max(lat) if lat else None,
                       "node_diagnostics": d, "bare_seconds_median": bare, "bare_fps": 1 / bare,
                       "node_period_over_bare": ratio, "rounds": [
                           {"node_period_s": p, "bare_s": b} for p, b in zip(periods, bare_rounds)]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
