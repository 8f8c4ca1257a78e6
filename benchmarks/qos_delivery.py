"""How many 640x480 rgb8 frames from a camera process reach lseg_node, per QoS/transport setting.

Each scenario starts lseg_node (tiny model; only the input callback matters here) and
test/fake_camera.py as separate processes on a private ROS domain, streams for --duration s at
30 Hz, and reads the node's `frames_received` from /diagnostics. Run from the repository root:
    .venv/bin/python -m benchmarks qos_delivery [--duration 5] [--width 640 --height 480]
"""
import argparse
import subprocess
import sys
import time

from benchmarks.harness import ROOT, child_env, claim_domain_id

BIG = "DEFAULT?sockets_size=4MB"

# (camera reliability, node input_reliability, env for the camera, env for the node)
SCENARIOS = [
    ("reliable", "auto", None, None),
    ("best_effort", "auto", None, None),
    ("reliable", "best_effort", None, None),      # what the sensor-data profile alone gives
    ("best_effort", "best_effort", None, None),
    ("best_effort", "auto", None, BIG),           # node side only (what the launch file sets)
    ("best_effort", "auto", BIG, BIG),            # both sides (documented for best-effort cameras)
    ("reliable", "best_effort", BIG, BIG),
    ("reliable", "auto", BIG, BIG),
]


def run(cam_rel, node_rel, cam_env, node_env, domain, duration, w, h):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context

    from ros_harness import NodeProcess, diagnostics_value

    env = child_env(domain)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    node = NodeProcess(env, params=("model:=tiny_vit", "device:=cpu", f"input_reliability:={node_rel}",
                                    "max_side:=64"),
                       extra_env={"FASTDDS_BUILTIN_TRANSPORTS": node_env} if node_env else None)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    diag = []
    n = rclpy.create_node("qos_probe", context=ctx)
    n.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)
    try:
        node.wait_ready()
        cam = subprocess.run([sys.executable, str(ROOT / "test" / "fake_camera.py"), "--reliability", cam_rel,
                              "--width", str(w), "--height", str(h), "--duration", str(duration)],
                             env={**env, **({"FASTDDS_BUILTIN_TRANSPORTS": cam_env} if cam_env else {})},
                             capture_output=True, text=True, timeout=duration + 60)
        published = int(cam.stdout.split()[-1]) if "published" in cam.stdout else -1
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            ex.spin_once(timeout_sec=0.1)
        received = diagnostics_value(diag, "frames_received")
        sub = diagnostics_value(diag, "input_reliability")
        return published, int(received or 0), sub
    finally:
        node.stop()
        ex.shutdown()
        n.destroy_node()
        rclpy.try_shutdown(context=ctx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--only", type=int, nargs="*", help="scenario indices (0-based) to run")
    a = ap.parse_args()
    if a.domain is None:
        a.domain, _lock = claim_domain_id()  # held until the process ends
    print(f"{a.width}x{a.height} rgb8, 30 Hz for {a.duration:.0f} s, two processes, Fast DDS (rclpy Kilted wheels)")
    print(f"{'camera':12} {'node input_reliability':22} {'sockets 4MB':14} {'node subscribed':16} received/published")
    for i, (cam_rel, node_rel, cam_env, node_env) in enumerate(SCENARIOS):
        if a.only and i not in a.only:
            continue
        pub, rec, sub = run(cam_rel, node_rel, cam_env, node_env, a.domain, a.duration, a.width, a.height)
        big = {(None, None): "no", (None, BIG): "node only", (BIG, BIG): "both"}[(cam_env, node_env)]
        print(f"{cam_rel:12} {node_rel:22} {big:14} {sub:16} {rec}/{pub}", flush=True)


if __name__ == "__main__":
    main()
