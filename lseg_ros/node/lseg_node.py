"""lseg_node: camera images in; LSeg class masks, overlays, confidences and label maps out.

A thin adapter over lseg_ros.model (docs/design.md): parameters become a Predictor; the image
callback only drops the frame into a one-slot buffer (newest wins, overwritten frames counted as
dropped); a worker thread converts, infers and publishes with the input header; label sets are
encoded in the set_labels service / parameter callback, never on the frame path, and swapped by
replacing one reference, so every frame's mask, class_confidences and label version come from the
same set. Topics, parameters, QoS and measurements: docs/node.md.
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import warnings

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from lseg_ros.msg import ClassConfidences, LabelEntry, LabelMap
from lseg_ros.srv import SetLabels

from .. import imaging
from . import params as P
from .ros_image import image_msg
from .qos import choose_reliability, input_profile, latched_profile, output_profile


# decode_image returns read-only views of the message buffer (no copy); torch only reads them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def _coerce(name: str, value: Any) -> Any:
    """Parameter value as the table's type: arrays as lists, integers as floats for float parameters."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return list(value)
    if isinstance(P.BY_NAME[name].default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class StartupError(RuntimeError):
    """The node cannot serve (weights, device, labels): main() logs it and exits non-zero."""


class FrameSlot:
    """One-slot buffer: put() replaces an unprocessed frame (newest wins), take() waits for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None

    def put(self, item: Any) -> bool:
        """Stores item; True when it replaced a frame the worker had not taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        with self._cond:
            had, self._item = self._item is not None, None
            return had


@dataclass(frozen=True, eq=False)
class ActiveLabels:
    """The label set in force, with its map version and colours. Replaced, never mutated."""

    label_set: Any  # lseg_ros.model.LabelSet
    version: int
    colors: np.ndarray  # (N, 3) uint8 RGB

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.label_set.names)

    @property
    def unlabeled_id(self) -> int:
        return imaging.unlabeled_id(len(self.names))


class Stats:
    """Counters and a sliding window of per-frame timings, shared by the callback, worker, diagnostics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = self.processed = 0
        self.dropped_overwritten = self.dropped_stale = self.dropped_invalid = self.errors = 0
        self.window: deque = deque(maxlen=2000)  # (publish time, latency s, inference s, publishing s)

    def add(self, field: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + n)


def build_predictor(cfg: Dict[str, Any], logger) -> Any:
    """Parameters -> Predictor. Raises StartupError naming the file / device / setting at fault."""
    weights = os.path.expanduser(cfg["weights"])
    if weights and not os.path.isfile(weights):  # before importing torch: fail in a second
        raise StartupError(f"weights file not found: {weights!r} (parameter 'weights')")
    import torch

    from lseg_ros.model import LSegConfig, LSegNet, Predictor

    if cfg["num_threads"] > 0:
        torch.set_num_threads(cfg["num_threads"])
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            logger.warning("device auto: no CUDA device found, running on the CPU: expect seconds per frame "
                           "with the full ViT-L/16 model (set device: cpu to silence this warning)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StartupError(f"device {device!r} requested but CUDA is not available on this machine "
                           "(use device: cpu or auto)")
    try:
        if weights:
            t0 = time.perf_counter()
            net = LSegNet.from_checkpoint(weights, spatial_block=cfg["spatial_block"] or None,
                                          block_depth=cfg["block_depth"], activation=cfg["activation"],
                                          device=device)
            logger.info(f"loaded weights {weights} in {time.perf_counter() - t0:.1f} s")
        else:
            config = getattr(LSegConfig, cfg["model"])()
            net = LSegNet.from_config(config, device=device)
            logger.warning(f"NO WEIGHTS (parameter 'weights' is empty): the {cfg['model']} network is UNTRAINED, "
                           "its masks are meaningless. Set weights: /path/to/demo_e200.ckpt (or the "
                           "project's .safetensors) for real segmentation.")
        return Predictor(net, device=device, precision=cfg["precision"], max_side=cfg["max_side"] or None)
    except StartupError:
        raise
    except Exception as e:  # CheckpointError, ValueError (precision/device), OSError, torch errors
        what = f"cannot load weights {weights!r}" if weights else f"cannot build model {cfg['model']!r}"
        raise StartupError(f"{what}: {type(e).__name__}: {e}") from e


class LSegNode(Node):
    """See the module docstring and docs/node.md."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lseg_node", **kwargs)
        self._cfg: Dict[str, Any] = {}
        for p in P.PARAMS:
            # float parameters also take integers (`max_frame_age: 0`); _read_param makes them floats
            desc = ParameterDescriptor(description=p.description, read_only=p.read_only,
                                       additional_constraints=p.constraints,
                                       dynamic_typing=isinstance(p.default, float))
            if isinstance(p.default, list) and not p.default:
                self.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, desc)
            else:
                self.declare_parameter(p.name, p.default, desc)
            self._cfg[p.name] = self._read_param(p.name)
        problems = [f"{n}: {r}" for n, v in self._cfg.items() if (r := P.validate(n, v))]
        if problems:
            raise StartupError("invalid parameters: " + "; ".join(problems))

        self._stats = Stats()
        self._slot = FrameSlot()
        self._stop = threading.Event()
        self._label_lock = threading.RLock()  # serialises label changes (service, parameter, re-enable)
        self._pub_lock = threading.Lock()  # heatmap publishers vs the worker
        self._version = 0
        self._active: Optional[ActiveLabels] = None
        self._label_texts: List[str] = list(self._cfg["labels"])
        self._predictor = None
        self._device = "-"
        self._last_error: Tuple[str, float] = ("", 0.0)
        self._warned: set = set()
        self._load_error = ""

        if self._cfg["enabled"]:
            self._predictor = build_predictor(self._cfg, self.get_logger())
            self._device = str(self._predictor.device)
            try:
                self._swap_labels(self._predictor.encode_labels(self._label_texts))
            except (TypeError, ValueError) as e:
                raise StartupError(f"parameter 'labels' {self._label_texts}: {e}") from e

        # Callback groups: the input (subscription + QoS re-check) is one exclusive group, labels
        # another, so a label encode never delays frame intake and the subscription is never
        # re-created while its callback runs. Inference runs in self._worker, outside the executor.
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._label_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        qos = output_profile(self._cfg["output_depth"])
        self._pub_mask = self.create_publisher(Image, "lseg/mask", qos)
        self._pub_overlay = self.create_publisher(Image, "lseg/overlay", qos)
        self._pub_conf = self.create_publisher(Image, "lseg/confidence", qos)
        self._pub_scores = self.create_publisher(ClassConfidences, "lseg/class_confidences", qos)
        self._pub_labels = self.create_publisher(LabelMap, "lseg/labels", latched_profile())
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._heatmaps: Dict[str, Any] = {}
        self._update_heatmap_publishers(self._cfg["heatmap_labels"])
        self.create_service(SetLabels, "set_labels", self._on_set_labels, callback_group=self._label_group)

        self._base_topic = self.resolve_topic_name("image")
        self._sub = None
        self._sub_key: Optional[tuple] = None
        self._input_rel: Optional[str] = None
        self._manage_input()
        self.create_timer(0.5, self._manage_input, callback_group=self._input_group)
        self._diag_t = time.monotonic()
        self.create_timer(self._cfg["diagnostics_period"], self._publish_diagnostics, callback_group=self._diag_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self._active is not None:
            self._publish_label_map(self._active)

        self._worker = threading.Thread(target=self._work, name="lseg_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {self._input_topic()} ({self._cfg['input_transport']}) -> {self.get_namespace().rstrip('/')}/lseg/*, "
            f"device {self._device}, labels {list(self._active.names) if self._active else self._label_texts}")

    # ---- parameters --------------------------------------------------------------------------
    def _read_param(self, name: str) -> Any:
        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        return _coerce(name, value)

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes: Dict[str, Any] = {}
        for prm in parameters:
            if prm.name not in P.BY_NAME:
                continue  # use_sim_time, qos_overrides...: not ours
            value = _coerce(prm.name, prm.value)
            reason = P.validate(prm.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{prm.name}: {reason}")
            changes[prm.name] = value
        with self._label_lock:
            if "labels" in changes and changes["labels"] != self._label_texts:
                ok, why = self._apply_labels(changes["labels"])
                if not ok:
                    return SetParametersResult(successful=False, reason=f"labels: {why}")
            self._cfg = {**self._cfg, **changes}  # replaced, never mutated: a frame reads one snapshot
            if "palette" in changes and self._active is not None:
                self._swap_labels(self._active.label_set)
        if "heatmap_labels" in changes:
            self._update_heatmap_publishers(changes["heatmap_labels"])
        if "enabled" in changes and not changes["enabled"]:
            self._slot.clear()
        return SetParametersResult(successful=True)

    # ---- labels --------------------------------------------------------------------------------
    def _apply_labels(self, labels: List[str]) -> Tuple[bool, str]:
        """Validate, encode (off the frame path) and swap. Caller holds _label_lock."""
        reason = P.validate("labels", labels)
        if reason:
            return False, reason
        predictor = self._predictor
        if predictor is None:  # disabled: check as encoding would (tokenizer only), encode when enabled
            from lseg_ros.model.text import parse_labels, tokenize

            try:
                tokenize([alt for parts in parse_labels(labels)[1] for alt in parts])
            except (TypeError, ValueError) as e:
                return False, str(e)
            self._label_texts = list(labels)
            return True, f"{len(labels)} labels stored; they are encoded when the node is enabled"
        t0 = time.perf_counter()
        try:
            label_set = predictor.encode_labels(list(labels))
        except (TypeError, ValueError) as e:
            return False, str(e)
        self._label_texts = list(labels)
        active = self._swap_labels(label_set)
        return True, (f"{len(label_set)} labels in force (label map version {active.version}, "
                      f"encoded in {1000 * (time.perf_counter() - t0):.0f} ms)")

    def _swap_labels(self, label_set) -> ActiveLabels:
        """Makes label_set the one in force: one reference assignment, read once per frame."""
        self._version += 1
        active = ActiveLabels(label_set, self._version, imaging.palette(len(label_set), self._cfg["palette"]))
        if hasattr(self, "_pub_labels"):  # the map goes out before any frame can use its version
            self._publish_label_map(active)
        self._active = active
        return active

    def _publish_label_map(self, active: ActiveLabels) -> None:
        msg = LabelMap()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.version = active.version
        msg.unlabeled_id = active.unlabeled_id
        for i, (name, text) in enumerate(zip(active.label_set.names, active.label_set.texts)):
            r, g, b = (int(c) for c in active.colors[i])
            msg.entries.append(LabelEntry(class_id=i, name=name, text=text, r=r, g=g, b=b))
        self._pub_labels.publish(msg)

    def _on_set_labels(self, request: SetLabels.Request, response: SetLabels.Response) -> SetLabels.Response:
        labels = list(request.labels)
        with self._label_lock:
            try:
                ok, message = self._apply_labels(labels)
            except Exception as e:  # an answer, never a dead service: the old set stays
                ok, message = False, f"encoding failed: {type(e).__name__}: {e}"
            if ok:  # reflect it in the 'labels' parameter (the callback sees no change, no re-encode)
                result = self.set_parameters([Parameter("labels", Parameter.Type.STRING_ARRAY, labels)])[0]
                if not result.successful:
                    self.get_logger().warning(f"labels parameter not updated: {result.reason}")
            response.labels = list(self._label_texts)
        response.success, response.message = ok, message
        if ok:
            self.get_logger().info(f"set_labels {labels}: {message}")
        else:
            self.get_logger().warning(f"set_labels {labels} refused: {message}")
        return response

    def _update_heatmap_publishers(self, names: List[str]) -> None:
        wanted = {n.strip().casefold(): n.strip() for n in names if n.strip()}
        with self._pub_lock:
            for key in list(self._heatmaps):
                if key not in wanted:
                    self.destroy_publisher(self._heatmaps.pop(key))
            for key, name in wanted.items():
                if key not in self._heatmaps:
                    topic = f"lseg/heatmap/{P.topic_token(name)}"
                    self._heatmaps[key] = self.create_publisher(Image, topic, output_profile(self._cfg["output_depth"]))

    # ---- input --------------------------------------------------------------------------------
    def _input_topic(self) -> str:
        return self._base_topic + ("/compressed" if self._cfg["input_transport"] == "compressed" else "")

    def _manage_input(self) -> None:
        """(Re)creates the input subscription when transport, reliability or depth should change."""
        want = self._cfg["enabled"] and self._predictor is not None
        if not want:
            if self._sub is not None:
                self.destroy_subscription(self._sub)
                self._sub, self._sub_key = None, None
            return
        topic = self._input_topic()
        mode = self._cfg["input_reliability"]
        infos = self.get_publishers_info_by_topic(topic)
        rels = [i.qos_profile.reliability for i in infos]
        rel = choose_reliability(mode, rels, self._input_rel)
        if mode == "reliable" and any(r.name == "BEST_EFFORT" for r in rels) and "incompatible" not in self._warned:
            self._warned.add("incompatible")
            self.get_logger().warning(f"input_reliability is reliable but a publisher of {topic} is best effort: "
                                      "its frames cannot arrive (use input_reliability: auto)")
        key = (topic, self._cfg["input_transport"], rel, self._cfg["input_depth"])
        if key == self._sub_key:
            return
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        kind = self._cfg["input_transport"]
        msg_type = CompressedImage if kind == "compressed" else Image
        self._sub = self.create_subscription(msg_type, topic, lambda m, k=kind: self._on_frame(m, k),
                                             input_profile(rel, self._cfg["input_depth"]),
                                             callback_group=self._input_group)
        self._sub_key, self._input_rel = key, rel
        self.get_logger().info(f"subscribed to {topic} ({msg_type.__name__}, {rel}, depth {key[3]}"
                               f"{', publishers: ' + ', '.join(r.name.lower() for r in rels) if rels else ''})")

    def _on_frame(self, msg, kind: str) -> None:
        """Executor thread: store the frame, nothing else (newest wins)."""
        self._stats.add("received")
        if self._slot.put((msg, kind, time.monotonic())):
            self._stats.add("dropped_overwritten")

    # ---- worker -------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync_enabled()
                item = self._slot.take(timeout=0.1)
                if item is not None:
                    self._process(*item)
            except Exception as e:  # never let the worker die: log, count, go on
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down (Ctrl-C ends the context under the frame in hand)
                self._stats.add("errors")
                self._frame_error(f"frame processing failed: {type(e).__name__}: {e}")

    def _sync_enabled(self) -> None:
        want = self._cfg["enabled"]
        if want and self._predictor is None and not self._load_error:
            try:
                predictor = build_predictor(self._cfg, self.get_logger())
            except StartupError as e:
                self._load_error = str(e)
                self.get_logger().error(f"enable failed: {e}")
                return
            with self._label_lock:
                self._predictor, self._device = predictor, str(predictor.device)
                try:
                    self._swap_labels(predictor.encode_labels(self._label_texts))
                except (TypeError, ValueError) as e:
                    self.get_logger().error(f"labels {self._label_texts}: {e}")
            self.get_logger().info(f"enabled: model loaded on {self._device}")
        elif not want and self._predictor is not None:
            with self._label_lock:
                device, self._predictor = self._device, None
            self._slot.clear()
            gc.collect()
            if device.startswith("cuda"):
                import torch
                torch.cuda.empty_cache()
            self.get_logger().info("disabled: model freed")
        elif not want:
            self._load_error = ""

    def _frame_error(self, text: str) -> None:
        """Logs a bad frame's problem; the same message at most every 2 s."""
        last, when = self._last_error
        now = time.monotonic()
        if text != last or now - when > 2.0:
            self._last_error = (text, now)
            self.get_logger().error(text)

    def _process(self, msg, kind: str, t_received: float) -> None:
        predictor, active, cfg = self._predictor, self._active, self._cfg
        if predictor is None or active is None:
            return
        stamp = Time.from_msg(msg.header.stamp, clock_type=self.get_clock().clock_type)
        now = self.get_clock().now()
        age = (now - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0 else 0.0
        if cfg["max_frame_age"] > 0 and age > cfg["max_frame_age"]:
            self._stats.add("dropped_stale")
            if "stale" not in self._warned:
                self._warned.add("stale")
                self.get_logger().warning(f"dropping frames older than max_frame_age={cfg['max_frame_age']} s "
                                          f"(this one: {age:.2f} s). If every frame is dropped, the camera's clock "
                                          "is not the node's: set max_frame_age: 0")
            return
        try:
            if kind == "compressed":
                image, order = imaging.decode_compressed(msg.format, msg.data, cfg["max_image_pixels"])
            else:
                image, order = imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step,
                                                    bool(msg.is_bigendian), msg.data, cfg["max_image_pixels"])
        except imaging.ImageError as e:
            self._stats.add("dropped_invalid")
            self._frame_error(f"dropped frame (stamp {stamp.nanoseconds * 1e-9:.3f}, frame_id "
                              f"'{msg.header.frame_id}'): {e}")
            return
        names = active.names
        heat = {}
        with self._pub_lock:
            for key, pub in self._heatmaps.items():
                if pub.get_subscription_count() > 0:
                    idx = next((i for i, n in enumerate(names) if n.casefold() == key), None)
                    if idx is None:
                        if ("heat", key, active.version) not in self._warned:
                            self._warned.add(("heat", key, active.version))
                            self.get_logger().warning(f"heatmap label {key!r} is not in the labels {list(names)}")
                    else:
                        heat[key] = (pub, idx)
        t0 = time.perf_counter()
        predictor.max_side = cfg["max_side"] or None  # set here: the worker is the predictor's only user
        pred = predictor.predict(image, active.label_set, channel_order=order, want_probs=bool(heat))
        t_inf = time.perf_counter() - t0
        self._publish(msg.header, image, order, pred, active, heat, cfg)
        t_pub = time.perf_counter() - t0 - t_inf
        done = self.get_clock().now()
        latency = (done - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0 else time.monotonic() - t_received
        with self._stats.lock:
            self._stats.processed += 1
            self._stats.window.append((time.monotonic(), latency, t_inf, t_pub))

    def _publish(self, header, image, order, pred, active: ActiveLabels, heat, cfg: Dict[str, Any]) -> None:
        unlabeled = active.unlabeled_id
        mask, mono = imaging.class_mask(pred.mask, pred.confidence, len(active.names), cfg["min_confidence"])
        if self._pub_mask.get_subscription_count() > 0:
            self._pub_mask.publish(image_msg(header, mask, mono))
        if self._pub_overlay.get_subscription_count() > 0:
            rgb = image if order == "rgb" else image[:, :, ::-1]
            vis = imaging.overlay(rgb, mask, active.colors, active.names if cfg["overlay_legend"] else None,
                                  alpha=cfg["overlay_alpha"],
                                  banner=None if cfg["weights"] else imaging.UNTRAINED_BANNER)
            self._pub_overlay.publish(image_msg(header, vis, "rgb8"))
        if self._pub_conf.get_subscription_count() > 0:
            self._pub_conf.publish(image_msg(header, pred.confidence, "32FC1"))
        for pub, idx in heat.values():
            try:
                pub.publish(image_msg(header, pred.probs[idx], "32FC1"))
            except Exception as e:  # a publisher destroyed by a concurrent heatmap_labels change
                self.get_logger().debug(f"heatmap publish skipped: {e}")
        scores = ClassConfidences()
        scores.header = header
        scores.label_set_version = active.version
        scores.labels = list(active.names)
        scores.pixel_fraction = pred.pixel_fraction.astype(np.float32).tolist()
        scores.mean_confidence = pred.mean_confidence.astype(np.float32).tolist()
        scores.max_confidence = pred.max_confidence.astype(np.float32).tolist()
        scores.unlabeled_id = unlabeled
        scores.min_confidence = float(cfg["min_confidence"])
        self._pub_scores.publish(scores)

    # ---- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        s = self._stats
        now = time.monotonic()
        with s.lock:
            period = max(1e-3, now - self._diag_t)
            recent = [w for w in s.window if w[0] > self._diag_t]
            counts = dict(received=s.received, processed=s.processed, dropped_overwritten=s.dropped_overwritten,
                          dropped_stale=s.dropped_stale, dropped_invalid=s.dropped_invalid, errors=s.errors)
        self._diag_t = now
        rate = len(recent) / period
        lat = [w[1] for w in recent]
        inf = [w[2] for w in recent]
        pub = [w[3] for w in recent]
        active = self._active
        st = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=self._device)
        if not self._cfg["enabled"]:
            st.level, st.message = DiagnosticStatus.OK, "disabled"
        elif self._load_error:
            st.level, st.message = DiagnosticStatus.ERROR, self._load_error
        elif not recent:
            st.level, st.message = DiagnosticStatus.WARN, f"no frames processed in the last {period:.1f} s"
        else:
            st.level = DiagnosticStatus.OK
            st.message = f"{rate:.1f} Hz, latency {1000 * float(np.mean(lat)):.0f} ms"
        if self._cfg["enabled"] and not self._cfg["weights"] and st.level == DiagnosticStatus.OK:
            st.level, st.message = DiagnosticStatus.WARN, st.message + " (UNTRAINED model: no weights)"
        values = {
            "rate_hz": f"{rate:.2f}",
            "latency_ms_mean": f"{1000 * float(np.mean(lat)):.1f}" if lat else "",
            "latency_ms_max": f"{1000 * float(np.max(lat)):.1f}" if lat else "",
            "inference_ms_mean": f"{1000 * float(np.mean(inf)):.1f}" if inf else "",
            "publish_ms_mean": f"{1000 * float(np.mean(pub)):.1f}" if pub else "",
            **{f"frames_{k}" if k in ("received", "processed") else k: str(v) for k, v in counts.items()},
            "device": self._device,
            "precision": self._cfg["precision"],
            "model": self._cfg["weights"] or f"{self._cfg['model']} (untrained)",
            "input_topic": self._input_topic(),
            "input_reliability": self._input_rel or "",
            "labels": ", ".join(active.names) if active else ", ".join(self._label_texts),
            "label_map_version": str(active.version if active else 0),
        }
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._pub_diag.publish(arr)

    # ---- shutdown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stops the worker. A frame in hand is abandoned after 2 s: once the context is shut down its
        outputs cannot be published anyway (and ros2 launch escalates to SIGTERM after 5 s)."""
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=2.0)



def main(args: Optional[List[str]] = None) -> int:
    rclpy.init(args=args)
    try:
        node = LSegNode()
    except StartupError as e:
        rclpy.logging.get_logger("lseg_node").fatal(str(e))
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while rclpy.ok():
            try:
                executor.spin()
            except (KeyboardInterrupt, ExternalShutdownException):
                break
            except Exception as e:  # a failing callback must not take the node down
                node.get_logger().error(f"callback failed: {type(e).__name__}: {e}")
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
