"""What the 3D outputs cost lseg_node per frame (budget, docs/3d.md: <= 15% each at 480x640): one node
(tiny untrained model by default, CPU), one RGB-D camera in this process (640x480 photo + aligned
32FC1 depth + camera_info, same stamps, at --rate Hz so every frame is processed), and phases with
different subscribers, interleaved and repeated in one run:

    2d        lseg/mask + lseg/class_confidences
    points    2d + lseg/points (decimation 1: every pixel with depth becomes a point)
    features  2d + lseg/features (stride 16)

Per phase: the node's own per-frame time from /diagnostics (inference + publishing, mean over the
phase) and the stamp-to-arrival latency at this process (median). Ratios are to the 2d phase.

    .venv/bin/python -m benchmarks bench_3d --phase-seconds 20 --repeats 2 [--json [FILE]]
"""
import argparse
import statistics
import sys
import time

from benchmarks.harness import machine, result_path, ros_domain, write_json


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--rate", type=float, default=2.0, help="camera rate (Hz); below the node's rate")
    ap.add_argument("--phase-seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--json", nargs="?", const="", default=None,
                    help="write the figures as JSON to this file (no value: the results folder, by the naming rule)")
    a = ap.parse_args()

    with ros_domain(a.domain) as (_, env, ctx):
        rows = _run(a, env, ctx)

    def mean(phase, key):
        v = [r[key] for r in rows if r["phase"] == phase and r[key] is not None]
        return statistics.mean(v) if v else float("nan")
    base = mean("2d", "node_ms_per_frame")
    summary = {p: dict(node_ms_per_frame=mean(p, "node_ms_per_frame"),
                       ratio_to_2d=mean(p, "node_ms_per_frame") / base,
                       latency_ms_median=mean(p, "latency_ms_median")) for p in ("2d", "points", "features")}
    for p, s in summary.items():
        print(f"{p:8s}: node {s['node_ms_per_frame']:7.1f} ms/frame  x{s['ratio_to_2d']:.3f} of 2d  "
              f"latency {s['latency_ms_median']:7.1f} ms")
    if a.json is not None:
        write_json(a.json or result_path("bench_3d"), {"host": machine(), "date": time.strftime("%Y-%m-%d"),
                                                        "model": a.model, "rows": rows, "summary": summary})
    return 0


def _run(a, env, ctx) -> list:
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from lseg_ros.msg import ClassConfidences, DenseFeatures
    from ros_harness import NodeProcess, TestNode, image_msg, photo, wait_for

    node = NodeProcess(env, params=(f"model:={a.model}", "device:=cpu", "precision:=fp32", "depth_topics:=[depth]",
                                    "diagnostics_period:=1.0", "heatmap_labels:=[]"), params_file=False)
    t = TestNode(ctx, name="bench_3d")
    rgb = photo(640, 480)
    z = np.full((480, 640), 2.0, np.float32)
    z[:, :320] = 1.0
    info = CameraInfo(width=640, height=480, k=[525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0])
    rows = []
    try:
        node.wait_ready(120)
        pubs = {n: t.node.create_publisher(ty, n, 5) for n, ty in (("image", Image), ("depth", Image),
                                                                  ("camera_info", CameraInfo))}
        t.subscribe("/diagnostics", DiagnosticArray)
        t.subscribe("lseg/mask", Image)
        t.subscribe("lseg/class_confidences", ClassConfidences, QoSProfile(depth=50))
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30, "node subscribed")
        extra = {"points": ("lseg/points", PointCloud2), "features": ("lseg/features", DenseFeatures)}
        for rep in range(a.repeats):
            for phase in ("2d", "points", "features"):
                sub = None
                if phase in extra:
                    topic, typ = extra[phase]
                    sub = t.node.create_subscription(typ, topic, lambda m: None, 5)
                time.sleep(1.0)
                t.clear(keep=())
                start = time.monotonic()
                while time.monotonic() - start < a.phase_seconds:
                    stamp = t.node.get_clock().now().to_msg()
                    info.header.stamp = stamp
                    pubs["camera_info"].publish(info)
                    pubs["depth"].publish(image_msg(z, "32FC1", stamp))
                    pubs["image"].publish(image_msg(rgb, "rgb8", stamp))
                    time.sleep(1.0 / a.rate)
                time.sleep(1.5)
                lat = [recv - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
                       for recv, m in t.timed("lseg/class_confidences")]
                per = []
                for _, arr in t.timed("/diagnostics"):
                    for st in arr.status:
                        if st.name.endswith("segmentation"):
                            kv = {v.key: v.value for v in st.values}
                            if kv.get("inference_ms_mean") and kv.get("publish_ms_mean"):
                                per.append(float(kv["inference_ms_mean"]) + float(kv["publish_ms_mean"]))
                if sub is not None:
                    t.node.destroy_subscription(sub)
                row = dict(repeat=rep, phase=phase, frames=len(lat), node_ms_per_frame=statistics.mean(per) if per else None,
                           latency_ms_median=1000 * statistics.median(lat) if lat else None)
                rows.append(row)
                print(f"rep {rep} {phase:8s}: {row['frames']:3d} frames, node {row['node_ms_per_frame'] or 0:7.1f} "
                      f"ms/frame, latency median {row['latency_ms_median'] or 0:7.1f} ms", flush=True)
    finally:
        t.close()
        node.stop()
    return rows


if __name__ == "__main__":
    sys.exit(main())
