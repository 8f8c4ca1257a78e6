"""CPU cost of receiving a 30 Hz 640x480 rgb8 camera, by how the frames are taken, and whether a
pulled reader keeps receiving (the reason lseg_node's image subscriptions are pulled, depth >= 2).

    .venv/bin/python -m benchmarks input_cost [--seconds 10] [--rate 30] [--domain N]

For each mode a camera process (test/fake_camera.py: reliable, as drivers publish) and a receiver
process that takes the frames run; the CPU time of both is read from /proc over `--seconds` after a 5 s warm-up:
  executor-multi   a subscription callback per frame, MultiThreadedExecutor(4) (lseg_node before)
  executor-single  the same with a SingleThreadedExecutor
  pulled           lseg_ros.node.cameras.FrameSource: the executor never sees the subscription; the
                   newest frame is taken every 0.2 s (an inference rate), subscription depth 2
  pulled-depth1    the same with depth 1: counts the takes that found no frame (a stalled reader)
"""
import argparse
import os
import subprocess
import sys
import time

from benchmarks.harness import ROOT, child_env, claim_domain_id

MODES = ("executor-multi", "executor-single", "pulled", "pulled-depth1")


def receiver(mode: str, seconds: float) -> None:
    from types import SimpleNamespace

    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.node.cameras import FrameSource, PulledGroup
    rclpy.init()
    n = rclpy.create_node("input_cost_receiver")
    count, empty = [0], [0]
    end = time.monotonic() + seconds
    if mode.startswith("executor"):
        n.create_subscription(Image, "image", lambda m: count.__setitem__(0, count[0] + 1), QoSProfile(depth=1))
        ex = MultiThreadedExecutor(num_threads=4) if mode == "executor-multi" else SingleThreadedExecutor()
        ex.add_node(n)
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
    else:
        depth = 1 if mode == "pulled-depth1" else 2
        sub = n.create_subscription(Image, "image", lambda m: None, QoSProfile(depth=depth), callback_group=PulledGroup())
        source = FrameSource(1, n.context)
        cam = SimpleNamespace(spec=SimpleNamespace(index=0), sub=sub)
        started = False
        while time.monotonic() < end:
            time.sleep(0.2)
            got = source.take_newest([cam], timeout=0.1)
            started = started or bool(got)
            count[0] += len(got)
            empty[0] += int(started and not got)
        count.append(source.stats[0].received)
    print(" ".join(str(c) for c in count), empty[0], flush=True)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--role", default="", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "receiver":
        receiver(a.mode, a.seconds)
        return 0
    if a.domain is None:
        a.domain, _lock = claim_domain_id()  # held until the process ends
    env = child_env(a.domain)
    me = [sys.executable, "-m", "benchmarks.input_cost", "--rate", str(a.rate)]
    fake_camera = [sys.executable, str(ROOT / "test" / "fake_camera.py"), "--rate", str(a.rate),
                   "--duration", str(a.seconds + 30)]
    print(f"640x480 rgb8 at {a.rate:g} Hz, reliable, {os.cpu_count()} cores; CPU as % of one core over {a.seconds:g} s")
    for mode in a.modes.split(","):
        rec = subprocess.Popen(me + ["--role", "receiver", "--mode", mode, "--seconds", str(a.seconds + 8)],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        cam = subprocess.Popen(fake_camera, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(6)  # the camera waits for the receiver, then streams
        c0, t0 = [cpu_seconds(p.pid) for p in (cam, rec)], time.monotonic()
        time.sleep(a.seconds)
        c1, dt = [cpu_seconds(p.pid) for p in (cam, rec)], time.monotonic() - t0
        out = rec.communicate(timeout=60)[0].split()
        cam.terminate()
        cam.wait(timeout=30)
        cpu = [100 * (b - x) / dt for x, b in zip(c0, c1)]
        taken = f"{out[0]} frames taken" + (f" (camera's sequence numbers: {out[1]} sent), {out[2]} takes found "
                                            "no frame" if len(out) > 2 else "")
        print(f"{mode:16s} receiver {cpu[1]:5.1f}%  camera {cpu[0]:5.1f}%  {taken}", flush=True)
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
