"""A camera stand-in for the QoS tests and benchmarks: a separate process publishing a real photo.

python test/fake_camera.py --reliability best_effort --width 640 --height 480 --rate 30 --duration 10
Publishes rgb8 on `image` (keep-last 5, the given reliability), stamped with the clock, then exits.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--topic", default="image")
    ap.add_argument("--wait-subscriber", type=float, default=20.0, help="s to wait for a subscriber first")
    a = ap.parse_args()

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ros_harness import image_msg, photo

    rclpy.init()
    node = rclpy.create_node("fake_camera")
    rel = ReliabilityPolicy.RELIABLE if a.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(Image, a.topic, QoSProfile(depth=5, reliability=rel))
    img = photo(a.width, a.height)
    deadline = time.monotonic() + a.wait_subscriber
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery finish both ways
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < a.duration:
        pub.publish(image_msg(img, "rgb8", node.get_clock().now().to_msg()))
        n += 1
        time.sleep(max(0.0, t0 + n / a.rate - time.monotonic()))
    print(f"published {n}", flush=True)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
