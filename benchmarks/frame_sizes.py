"""Per-frame time and peak memory of lseg_node for 640x480, 1920x1080 and 4096x4096 frames, with the
default network bound (max_side 1280) and, with --unbounded, without it (max_side 0).

    .venv/bin/python -m benchmarks frame_sizes --model tiny_vit --frames 3
    .venv/bin/python -m benchmarks frame_sizes --model vitl16 --frames 1 --sizes 640x480,1920x1080,4096x4096

For each size a fresh node process (untrained weights, CPU) gets one frame at a time; reported: the
stamp-to-mask time of each frame (median) and the node's peak RSS (VmHWM) after them, beside its RSS
when idle. Writes JSON with --json (benchmarks/results/frame_sizes_<model>_<machine>_<date>.json).
"""
import argparse
import statistics
import sys
import time

from benchmarks.harness import machine, result_path, ros_domain, write_json


def _vm(pid: int, key: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--sizes", default="640x480,1920x1080,4096x4096")
    ap.add_argument("--unbounded", action="store_true", help="also run with max_side 0 (no bound)")
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--json", nargs="?", const="", default=None,
                    help="write the rows as JSON to this file (no value: the results folder, by the naming rule)")
    a = ap.parse_args()

    with ros_domain(a.domain) as (_, env, ctx):
        rows = _run(a, env, ctx)
    if a.json is not None:
        write_json(a.json or result_path(f"frame_sizes_{a.model}"),
                   {"host": machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows})
    return 0


def _run(a, env, ctx) -> list:
    from sensor_msgs.msg import Image

    from ros_harness import NodeProcess, TestNode, image_msg, photo, stamp_key, wait_for

    t = TestNode(ctx, name="frame_sizes")
    t.subscribe("lseg/mask", Image)
    pub = t.node.create_publisher(Image, "image", 2)
    rows = []
    bounds = [1280] + ([0] if a.unbounded else [])
    for bound in bounds:
        for size in a.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            node = NodeProcess(env, params=(f"model:={a.model}", "device:=cpu", "precision:=fp32",
                                            f"max_side:={bound}", "max_frame_age:=0.0",
                                            f"max_image_pixels:={max(w * h, 16)}"), params_file=False)
            try:
                node.wait_ready(180)
                wait_for(lambda: pub.get_subscription_count() > 0, 30, "subscribed")
                idle = _vm(node.proc.pid, "VmRSS")
                img = photo(w, h)
                times = []
                for _ in range(a.frames):
                    msg = image_msg(img, "rgb8", t.node.get_clock().now().to_msg())
                    t0 = time.monotonic()
                    pub.publish(msg)
                    wait_for(lambda: [m for m in t.messages("lseg/mask") if stamp_key(m) == stamp_key(msg)],
                             900, f"mask of {size}", period=0.01)
                    times.append(time.monotonic() - t0)
                    time.sleep(0.5)
                peak = _vm(node.proc.pid, "VmHWM")
            finally:
                node.stop()
            row = dict(model=a.model, size=size, max_side=bound, frames=len(times),
                       seconds_per_frame=statistics.median(times), rss_idle_mb=idle, rss_peak_mb=peak)
            rows.append(row)
            print(f"{a.model:9s} {size:>10s} max_side {bound:4d}: {row['seconds_per_frame']:7.2f} s/frame "
                  f"(median of {len(times)}), RSS idle {idle:6.0f} MB, peak {peak:6.0f} MB", flush=True)
    t.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
