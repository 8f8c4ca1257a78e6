"""The main job, end to end: a camera-like photo stream -> lseg_node -> overlays and class confidences.

Starts `image_player` (real photos, 640x480, as a camera driver publishes them) and `lseg_node` as
two processes, as `ros2 launch` would, and in this process a viewer node that subscribes to the
node's outputs, calls `/set_labels` partway through, writes the overlays it received as PNG files
and prints the per-class confidences of every frame.

    python -m lseg_ros.node.demo [--weights PATH] [--out out/demo]

Without weights (none given, none at the default paths) it says so and runs the same
architecture with untrained weights: the masks are then meaningless and every output says so.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_WEIGHTS = ("weights/lseg_vitl16.safetensors", "weights/demo_e200.ckpt")
FIRST_LABELS = ["person", "table", "chair", "food", "floor", "wall", "other"]
SECOND_LABELS = ["cat", "cup", "sky", "rocket", "shelf", "other"]


def find_weights(given: str | None) -> Path | None:
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"demo: weights file not found: {path}")
        return path
    for candidate in [os.environ.get("LSEG_WEIGHTS", "")] + list(DEFAULT_WEIGHTS):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help=f"checkpoint (released .ckpt or own .safetensors); default: $LSEG_WEIGHTS "
                                     f"or the first of {', '.join(DEFAULT_WEIGHTS)} that exists")
    p.add_argument("--model", default="vitl16", help="architecture when running without weights "
                                                    "(vitl16, rn101; tiny_vit for a fast smoke run)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", default="out/demo", help="folder for the overlay images")
    p.add_argument("--frames", type=int, default=3, help="frames to collect with each label set")
    p.add_argument("--rate", type=float, default=2.0, help="camera rate in Hz")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    weights = find_weights(args.weights)
    if weights is None:
        print("demo: no released weights found (looked for --weights, $LSEG_WEIGHTS, "
              f"{', '.join(DEFAULT_WEIGHTS)}).\n"
              f"demo: running '{args.model}' with UNTRAINED random weights: the masks are meaningless and "
              "every overlay is marked UNTRAINED.\n"
              "demo: for real results: lseg-fetch (or download demo_e200.ckpt by hand into weights/), then "
              "rerun, or pass --weights PATH.", flush=True)
    else:
        print(f"demo: weights {weights}", flush=True)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences, LabelMap
    from lseg_ros.srv import SetLabels

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("frame_*.png"):
        old.unlink()

    node_params = ["-p", f"device:={args.device}", "-p", f"labels:={FIRST_LABELS!r}".replace("'", '"')]
    node_params += ["-p", f"weights:={weights}"] if weights else ["-p", f"model:={args.model}"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "lseg_ros.node.image_player", "--ros-args",
                          "-p", f"rate:={args.rate}", "-p", "frames_per_image:=1"]),
        subprocess.Popen([sys.executable, "-m", "lseg_ros.node.lseg_node", "--ros-args"] + node_params),
    ]

    rclpy.init()
    node = rclpy.create_node("lseg_demo_viewer")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    received: dict = {"overlay": {}, "conf": {}, "labels": None}

    def key(header):
        return (header.stamp.sec, header.stamp.nanosec)

    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "lseg/overlay", lambda m: received["overlay"].__setitem__(key(m.header), m),
                             reliable)
    node.create_subscription(ClassConfidences, "lseg/class_confidences",
                             lambda m: received["conf"].__setitem__(key(m.header), m), reliable)
    node.create_subscription(LabelMap, "lseg/labels", lambda m: received.__setitem__("labels", m),
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    client = node.create_client(SetLabels, "/set_labels")
    deadline = time.monotonic() + args.timeout
    written: list[Path] = []
    t_start = time.monotonic()

    def spin_until(done, what):
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"demo: a node exited early (exit code {p.returncode}): {p.args}")
            executor.spin_once(timeout_sec=0.2)

    def collect(version_frames: int, version: int):
        """Waits for frames segmented with label-set `version`; writes and prints each once."""
        done = set()

        def ready():
            for k, conf in sorted(received["conf"].items()):
                if k in done or conf.label_set_version != version or k not in received["overlay"]:
                    continue
                done.add(k)
                write_frame(received["overlay"][k], conf)
            return len(done) >= version_frames

        spin_until(ready, f"{version_frames} frames with label set {version}")

    def write_frame(overlay, conf):
        import cv2

        rgb = np.frombuffer(bytes(overlay.data), np.uint8).reshape(overlay.height, overlay.width, 3)
        path = out / f"frame_{len(written):03d}_labels_v{conf.label_set_version}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path)
        stamp = conf.header.stamp.sec + conf.header.stamp.nanosec * 1e-9
        print(f"\nframe {len(written)} (stamp {stamp:.3f}, frame_id {conf.header.frame_id}, label set "
              f"v{conf.label_set_version}) -> {path}")
        print(f"  {'label':<12} {'pixels':>7} {'mean conf':>10} {'max conf':>9}")
        for i in np.argsort(conf.pixel_fraction)[::-1]:
            print(f"  {conf.labels[i]:<12} {conf.pixel_fraction[i]:7.1%} {conf.mean_confidence[i]:10.3f} "
                  f"{conf.max_confidence[i]:9.3f}")

    try:
        print("demo: waiting for lseg_node (loading the model) ...", flush=True)
        spin_until(lambda: received["labels"] is not None, "the label map")
        first = received["labels"].version
        print(f"demo: label map v{first}: {[e.name for e in received['labels'].entries]}", flush=True)
        collect(args.frames, first)

        print(f"\ndemo: calling /set_labels {SECOND_LABELS}", flush=True)
        spin_until(client.service_is_ready, "the set_labels service")
        future = client.call_async(SetLabels.Request(labels=SECOND_LABELS))
        spin_until(future.done, "the set_labels answer")
        answer = future.result()
        print(f"demo: set_labels -> success={answer.success} message='{answer.message}' labels={list(answer.labels)}")
        if not answer.success:
            return 1
        spin_until(lambda: received["labels"].version != first, "the new label map")
        collect(args.frames, received["labels"].version)
        elapsed = time.monotonic() - t_start
        sheet = contact_sheet(written, out / "overview.png")
        print(f"\ndemo: {len(written)} overlays in {out}/ ({elapsed:.0f} s); overview: {sheet}")
        if weights is None:
            print("demo: these came from UNTRAINED weights: the masks are meaningless.")
        return 0
    except (TimeoutError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def contact_sheet(paths: list[Path], dest: Path, columns: int = 3, width: int = 480) -> Path:
    """One picture of all overlays, in order, for a quick look."""
    import cv2

    tiles = []
    columns = min(columns, len(paths))
    for p in paths:
        img = cv2.imread(str(p))
        tiles.append(cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1]))))
    h = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(dest), np.vstack(rows))
    return dest


if __name__ == "__main__":
    sys.exit(main())
