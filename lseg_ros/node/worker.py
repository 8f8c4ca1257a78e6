"""The inference worker: one thread, one batched forward for the newest frame of every ready camera
(pulled from DDS by cameras.FrameSource when the worker is ready for them).

Per batch: take every pending frame (one per camera), drop stale ones (`max_frame_age`) and ones that
do not decode (named in the log, counted), run `Predictor.predict_batch` once with the label set in
force, publish each camera's outputs with its own header. An exception inside inference (out of
memory on a large frame, ...) is reported in /diagnostics and the next batch goes on.

Stopping mid-frame: on the CPU a ViT-L/16 frame takes seconds, so the network gets forward pre-hooks
on its stages that raise `Cancelled` once `cancel` is set (a deactivate, cleanup or Ctrl-C then ends
the frame within one stage, a few hundred ms, instead of after the whole forward). Not installed on CUDA,
where a frame takes milliseconds and hooks would stand in the way of compiled graphs.
"""
from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Dict, List, Optional

from rclpy.time import Time

from .. import imaging
from .diagnostics import Lap

# decode_image returns read-only views of the message buffer (no copy); torch only reads them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class Cancelled(Exception):
    """Raised inside the network's forward when the worker is asked to stop."""


class CancelHooks:
    """Forward pre-hooks on the image path's stages (`LSegNet.stage_modules`: each ViT block's
    attention and MLP, ResNet blocks, fusion blocks), which every forward calls in every precision."""

    def __init__(self, net, event: threading.Event) -> None:
        def check(_module, _inputs):
            if event.is_set():
                raise Cancelled()
        self._handles = [m.register_forward_pre_hook(check) for m in net.stage_modules()]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class InferenceWorker:
    """Runs in its own thread (outside the executor); `node` is the LSegNode adapter."""

    def __init__(self, node) -> None:
        self.node = node
        self.stop = threading.Event()
        self.cancel = threading.Event()  # ends the frame in hand (deactivate, cleanup, shutdown)
        self.busy = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lseg_worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        node = self.node
        while not self.stop.is_set():
            try:
                frames = node.frames
                items = frames.take_newest(node.cameras, timeout=0.1) if frames is not None else {}
                if not items:
                    if frames is None:
                        time.sleep(0.05)
                    continue
                self.busy.set()
                self._batch(items)
            except Cancelled:
                pass
            except Exception as e:  # never let the worker die: report, count, go on
                if self.stop.is_set() or not node.context.ok():
                    return
                node.report_error(f"inference failed: {type(e).__name__}: {e}")
            finally:
                self.busy.clear()

    def _batch(self, items) -> None:
        node = self.node
        predictor, active, cfg, outputs, source = node.predictor, node.labels.active, node.cfg, node.outputs, node.frames
        if predictor is None or active is None or not outputs or self.cancel.is_set():
            return
        clock = node.get_clock()
        frames: List[Any] = []
        stages: Dict[str, float] = {}
        for cam, (msg, kind, t_received) in sorted(items.items()):
            stamp = Time.from_msg(msg.header.stamp, clock_type=clock.clock_type)
            age = (clock.now() - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0 else 0.0
            if cfg["max_frame_age"] > 0 and age > cfg["max_frame_age"]:
                source.count(cam, "dropped_stale")
                node.warn_once("stale", f"dropping frames older than max_frame_age={cfg['max_frame_age']} s "
                                        f"(this one: {age:.2f} s). If every frame is dropped, the camera's clock "
                                        "is not the node's: set max_frame_age: 0")
                continue
            lap = Lap(stages)
            try:
                if kind == "compressed":
                    image, order = imaging.decode_compressed(msg.format, msg.data, cfg["max_image_pixels"])
                else:
                    image, order = imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step,
                                                        bool(msg.is_bigendian), msg.data, cfg["max_image_pixels"])
            except imaging.ImageError as e:
                source.count(cam, "dropped_invalid")
                node.frame_error(f"dropped frame of {node.cameras[cam].spec.image_topic} (stamp "
                                 f"{stamp.nanoseconds * 1e-9:.3f}, frame_id '{msg.header.frame_id}'): {e}")
                continue
            lap("decode")
            depth = node.depths[cam] if node.depths else None
            if depth is not None and outputs[cam].points.get_subscription_count() > 0:
                depth.hold(msg.header.stamp)  # its depth frame must outlast a slow (CPU) inference
            frames.append((cam, msg.header, image, order, stamp, t_received))
        if not frames:
            return
        names = active.names
        heat = {}
        for cam, *_ in frames:
            heat[cam], missing = outputs[cam].wanted_heatmaps(names)
            for key in missing:
                node.warn_once(("heat", key, active.version), f"heatmap label {key!r} is not in the labels {list(names)}")
        want_probs = sorted({idx for h in heat.values() for _, idx in h.values()})
        t0 = time.perf_counter()
        predictor.max_side = cfg["max_side"] or None  # the worker is the predictor's only user
        want_features = any(outputs[cam].features.get_subscription_count() > 0 for cam, *_ in frames)
        preds = predictor.predict_batch([f[2] for f in frames], active.label_set,
                                        channel_orders=[f[3] for f in frames], want_probs=want_probs or False,
                                        features_stride=cfg["features_stride"] if want_features else None)
        t_inf = time.perf_counter() - t0
        for (cam, header, image, order, stamp, t_received), pred in zip(frames, preds):
            if self.cancel.is_set():
                return
            outputs[cam].publish(header, image, order, pred, active, heat[cam], cfg, stages)
            depth = node.depths[cam] if node.depths else None
            if depth is not None and outputs[cam].points.get_subscription_count() > 0:
                lap = Lap(stages)
                cloud = depth.cloud(header, image if order == "rgb" else image[:, :, ::-1], pred, active, cfg,
                                    node.frame_error)
                if cloud is not None:
                    outputs[cam].points.publish(cloud)
                lap("points")
            done = clock.now()
            latency = ((done - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0
                       else time.monotonic() - t_received)
            source.count(cam, "processed", latency)
        node.timings.add(len(frames), t_inf, time.perf_counter() - t0 - t_inf, stages)

    def join(self, timeout: float) -> bool:
        """Stops the thread (cancelling the frame in hand); True when it ended within `timeout`."""
        self.stop.set()
        self.cancel.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def make_predictor_cancellable(predictor, worker: InferenceWorker) -> Optional[CancelHooks]:
    """Hooks for mid-frame stops on the CPU (see the module docstring); None on CUDA."""
    if getattr(predictor.device, "type", "cpu") != "cpu":
        return None
    return CancelHooks(predictor.net, worker.cancel)
