"""LSegNode: the managed (lifecycle) ROS 2 node, a thin adapter over lseg_ros.model.

States (docs/node.md, "Lifecycle"): unconfigured -> configure (load the weights, encode the labels,
create the publishers, publish the label map) -> inactive -> activate (subscribe to every camera) ->
active -> deactivate (unsubscribe, end the frame in hand, keep the model) -> cleanup (free the model
and GPU memory) -> unconfigured; shutdown from any state. With `autostart` (default) main() drives it
to active. The pieces: cameras.py (per-camera input), worker.py (one batching inference thread),
outputs.py (per-camera publishers), labels.py (the label set in force), diagnostics.py.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Dict, List, Optional

from lifecycle_msgs.msg import State
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from diagnostic_msgs.msg import DiagnosticArray

from lseg_ros.msg import LabelEntry, LabelMap
from lseg_ros.srv import EncodeTexts, SetLabels

from ..geometry.features import pack_embeddings
from . import diagnostics
from . import params as P
from .cameras import CameraInput, FrameSource, PulledGroup, camera_layout
from .config import NodeConfig
from .depth_input import DepthInput, default_info_topic
from .label_info import LabelInfoPublisher
from .labels import ActiveLabels, LabelState
from .outputs import CameraOutputs
from .predictor_setup import StartupError, build_predictor, free_device_memory
from .qos import latched_profile
from .worker import BatchContext, InferenceWorker, WorkerHooks, make_predictor_cancellable

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def _fast_path_text(predictor) -> str:
    """What runs, for /diagnostics: e.g. 'compile + cuda_graphs at 480x640', 'eager (prepack, channels_last)'."""
    if predictor is None:
        return ""
    o = predictor.options
    on = [k for k in ("compile", "cuda_graphs") if getattr(o, k)]
    cpu = [k for k in ("prepack", "channels_last") if getattr(o, k)] + (["cpu_attention"] if predictor.cpu_attention else [])
    text = " + ".join(on) if on else "eager" + (f" ({', '.join(cpu)})" if cpu else "")
    return text + (f" at {o.input_size[0]}x{o.input_size[1]}" if o.input_size else "")


class LSegNode(LifecycleNode):
    """See the module docstring and docs/node.md."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lseg_node", **kwargs)
        values: Dict[str, Any] = {}
        for p in P.PARAMS:
            # float parameters also take integers (`max_frame_age: 0`); NodeConfig makes them floats
            desc = ParameterDescriptor(description=p.description, additional_constraints=p.constraints,
                                       dynamic_typing=isinstance(p.default, float))
            if isinstance(p.default, list) and not p.default:
                self.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, desc)
            else:
                self.declare_parameter(p.name, p.default, desc)
            try:
                values[p.name] = self.get_parameter(p.name).value
            except ParameterUninitializedException:
                values[p.name] = []
        try:
            cfg = NodeConfig.from_values(values)
        except ValueError as e:
            raise StartupError(str(e)) from None
        # rclpy keeps the command line's and params files' values in _parameter_overrides (no public
        # accessor); ones this node does not declare would be ignored silently: say so (a typo, mostly).
        unknown = sorted(n for n in getattr(self, "_parameter_overrides", {})
                         if n not in P.BY_NAME and n not in ("use_sim_time", "start_type_description_service")
                         and not n.startswith("qos_overrides."))
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameter(s) {', '.join(unknown)} (from the command line "
                                      f"or a params file); lseg_node's parameters: docs/node.md")
        self.cfg = cfg  # replaced, never mutated: a batch takes one (batch_context)
        self.predictor = None
        self.device = "-"
        self.cameras: List[CameraInput] = []
        self.depths: List[Optional[DepthInput]] = []
        self.outputs: List[CameraOutputs] = []
        self.frames: Optional[FrameSource] = None
        self.timings = diagnostics.Timings()
        self._warned: set = set()
        self._last_log = ("", 0.0)
        self._load_error = ""
        self._cancel_hooks = None
        self._pub_labels = None
        self.label_info = LabelInfoPublisher(self)
        self.labels = LabelState(list(cfg.labels), cfg.palette, self._publish_label_map)

        # Callback groups: input (depth, camera_info, QoS re-check), labels, diagnostics; the image
        # subscriptions are in a group the executor never serves (the worker pulls their frames, in its
        # own thread); transitions and parameters use the default group.
        self._image_group = PulledGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._label_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetLabels, "set_labels", self._on_set_labels, callback_group=self._label_group)
        self.create_service(EncodeTexts, "encode_texts", self._on_encode_texts, callback_group=self._label_group)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_t = time.monotonic()
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics, callback_group=self._diag_group)
        self.create_timer(0.5, self._refresh_inputs, callback_group=self._input_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.worker = InferenceWorker(self.batch_context, self.get_clock(), WorkerHooks(
            frame_error=self.frame_error, warn_once=self.warn_once, report_error=self.report_error,
            timings=self.timings, ok=self.context.ok))

    # ---- state ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state_machine.current_state[1]

    def _configured(self) -> bool:
        return self._state_machine.current_state[0] in (State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE)

    # ---- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        cfg = self.cfg
        try:
            specs = camera_layout(cfg.image_topics)
            for name in ("depth_topics", "camera_info_topics"):
                topics = getattr(cfg, name)
                if topics and len(topics) != len(specs):
                    raise ValueError(f"{name} has {len(topics)} topics for {len(specs)} image_topics: give one "
                                     "per camera, in the same order (or none)")
            predictor = build_predictor(cfg, self.get_logger())
            try:
                label_set = predictor.encode_labels(self.labels.texts)
            except (TypeError, ValueError) as e:
                raise StartupError(f"parameter 'labels' {self.labels.texts}: {e}") from e
        except (StartupError, ValueError) as e:
            self._load_error = str(e)
            self.get_logger().error(f"configure failed: {e}")
            return FAILURE
        self._load_error = ""
        self.predictor, self.device = predictor, str(predictor.device)
        self._cancel_hooks = make_predictor_cancellable(predictor, self.worker)
        self._pub_labels = self.create_publisher(LabelMap, "lseg/labels", latched_profile())
        self.label_info.open()
        self.outputs = [CameraOutputs(self, s.output_prefix, cfg.output_depth, list(cfg.heatmap_labels))
                        for s in specs]
        self.frames = FrameSource(len(specs), self.context)
        warn = lambda text: self.warn_once(("reliable", text), text)  # noqa: E731
        self.cameras = [CameraInput(self, s, self._image_group, warn) for s in specs]
        infos = cfg.camera_info_topics or [default_info_topic(s.image_topic) for s in specs]
        self.depths = [DepthInput(self, d, i, self._input_group, warn) for d, i in zip(cfg.depth_topics, infos)]
        self.labels.swap(label_set, cfg.palette)
        self.get_logger().info(f"configured: {predictor.net.config.backbone} on {self.device} "
                               f"({predictor.precision}, {predictor.backend}), labels {list(self.labels.active.names)}")
        return SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.worker.cancel.clear()
        self._refresh_inputs(force=True)
        outs = ", ".join(f"{c.sub.topic_name} -> {o.prefix}/*" for c, o in zip(self.cameras, self.outputs))
        self.get_logger().info(f"ready: {outs}, device {self.device}, labels {list(self.labels.active.names)}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_input()
        self.get_logger().info("deactivated: not processing; the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model freed")
        return SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        return SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        return self.on_shutdown(state)

    def _stop_input(self) -> None:
        """Unsubscribe and end the frame in hand (cancelled on the CPU; waited for on CUDA, ms)."""
        for cam in [*self.cameras, *self.depths]:
            cam.close()
        self.worker.cancel.set()
        deadline = time.monotonic() + 5.0
        while self.worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)

    def _release(self) -> None:
        for cam in [*self.cameras, *self.depths]:
            cam.close()
        for out in self.outputs:
            out.close()
        if self._pub_labels is not None:
            self.destroy_publisher(self._pub_labels)
        self.label_info.close()
        if self._cancel_hooks is not None:
            self._cancel_hooks.remove()
        device = self.device
        self.cameras, self.depths, self.outputs, self.frames = [], [], [], None
        self._pub_labels, self._cancel_hooks = None, None
        with self.labels.lock:
            self.predictor, self.device = None, "-"
            self.labels.drop()
        gc.collect()
        free_device_memory(device)

    # ---- parameters ---------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes: Dict[str, Any] = {}
        for prm in parameters:
            if prm.name not in P.BY_NAME:
                continue  # use_sim_time, qos_overrides...: not ours
            value = NodeConfig.coerce(prm.name, prm.value)
            reason = P.validate(prm.name, list(value) if isinstance(value, tuple) else value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{prm.name}: {reason}")
            if P.BY_NAME[prm.name].at_configure and value != getattr(self.cfg, prm.name) and self._configured():
                return SetParametersResult(successful=False, reason=(
                    f"{prm.name} is read at configure: deactivate and clean up the node first "
                    "(ros2 lifecycle set <node> deactivate, then cleanup), set it, then configure"))
            changes[prm.name] = value
        with self.labels.lock:
            if "labels" in changes and list(changes["labels"]) != self.labels.texts:
                ok, why = self.labels.set(list(changes["labels"]), self.predictor)
                if not ok:
                    return SetParametersResult(successful=False, reason=f"labels: {why}")
            self.cfg = self.cfg.changed(**changes)
            if "palette" in changes and self.labels.active is not None:
                self.labels.swap(self.labels.active.label_set, changes["palette"])
            elif "palette" in changes:
                self.labels.palette = changes["palette"]
            if "min_confidence" in changes:  # LabelInfo's threshold
                self.label_info.publish(self.labels.active, changes["min_confidence"], self.get_clock().now().to_msg())
        if "heatmap_labels" in changes:
            for out in self.outputs:
                out.set_heatmaps(list(changes["heatmap_labels"]))
        return SetParametersResult(successful=True)

    # ---- labels -------------------------------------------------------------------------------
    def _publish_label_map(self, active: ActiveLabels) -> None:
        if self._pub_labels is None:
            return
        msg = LabelMap()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.version = active.version
        msg.unlabeled_id = active.unlabeled_id
        for i, (name, text) in enumerate(zip(active.label_set.names, active.label_set.texts)):
            r, g, b = (int(c) for c in active.colors[i])
            msg.entries.append(LabelEntry(class_id=i, name=name, text=text, r=r, g=g, b=b))
        msg.embedding_dim, flat = pack_embeddings(active.label_set.embeddings.float().cpu().numpy())
        msg.embeddings = flat
        self._pub_labels.publish(msg)
        self.label_info.publish(active, self.cfg.min_confidence, msg.header.stamp)

    def _on_set_labels(self, request: SetLabels.Request, response: SetLabels.Response) -> SetLabels.Response:
        t0 = time.perf_counter()
        labels = [str(x) for x in request.labels]
        with self.labels.lock:
            try:
                ok, message = self.labels.set(labels, self.predictor)
            except Exception as e:  # an answer, never a dead service: the old set stays
                ok, message = False, f"encoding failed: {type(e).__name__}: {e}"
            if ok:  # reflect it in the 'labels' parameter (the callback sees no change, no re-encode)
                result = self.set_parameters([Parameter("labels", Parameter.Type.STRING_ARRAY, labels)])[0]
                if not result.successful:
                    self.get_logger().warning(f"labels parameter not updated: {result.reason}")
            response.labels = self.labels.names_in_force()
        response.success, response.message = ok, message
        inside = f"{1000 * (time.perf_counter() - t0):.0f} ms in the callback"  # benchmarks/soak.py reads it
        if ok:
            self.get_logger().info(f"set_labels {labels}: {message}; {inside}")
        else:
            self.get_logger().warning(f"set_labels {labels} refused: {message}; {inside}")
        return response

    def _on_encode_texts(self, request: EncodeTexts.Request, response: EncodeTexts.Response) -> EncodeTexts.Response:
        """Embeddings of any texts with the labels' encoder, templates and '|' averaging; the labels in
        force stay. Needs the model: refused (with the reason) while unconfigured."""
        texts, templates = [str(x) for x in request.texts], [str(x) for x in request.templates] or None
        predictor = self.predictor
        response.success, response.dim = False, 0
        if predictor is None:
            response.message = f"no model loaded (lifecycle state {self.state}): configure the node first"
        elif not texts:
            response.message = "texts is empty: give at least one text"
        elif len(texts) > P.MAX_LABELS:
            response.message = f"{len(texts)} texts: at most {P.MAX_LABELS} per request"
        else:
            t0 = time.perf_counter()
            try:
                encoded = predictor.encode_labels(texts, templates)
            except (TypeError, ValueError) as e:
                response.message = str(e)
            else:
                response.dim, flat = pack_embeddings(encoded.embeddings.float().cpu().numpy())
                response.embeddings = flat
                response.names = list(encoded.names)
                response.success = True
                response.message = f"{len(texts)} texts encoded in {1000 * (time.perf_counter() - t0):.0f} ms"
        if not response.success:
            self.get_logger().warning(f"encode_texts {texts[:5]} refused: {response.message}")
        return response

    # ---- input, worker callbacks, diagnostics -------------------------------------------------
    def _refresh_inputs(self, force: bool = False) -> None:
        if force or self._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE:
            for cam in [*self.cameras, *self.depths]:
                cam.refresh(self.cfg)

    def warn_once(self, key, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def frame_error(self, text: str) -> None:
        """Logs a bad frame's problem; the same message at most every 2 s."""
        last, when = self._last_log
        now = time.monotonic()
        if text != last or now - when > 2.0:
            self._last_log = (text, now)
            self.get_logger().error(text)

    def report_error(self, text: str) -> None:
        self.timings.error(text)
        self.frame_error(text)

    def batch_context(self) -> Optional[BatchContext]:
        """What the worker needs for one batch, taken together; None while the node cannot process."""
        predictor, active, outputs, frames = self.predictor, self.labels.active, self.outputs, self.frames
        if predictor is None or active is None or not outputs or frames is None:
            return None
        return BatchContext(predictor, active, self.cfg, tuple(self.cameras), tuple(outputs), tuple(self.depths),
                            frames)

    def _publish_diagnostics(self) -> None:
        cfg, active = self.cfg, self.labels.active
        info = {
            "precision": getattr(self.predictor, "precision", cfg.precision),
            "backend": getattr(self.predictor, "backend", cfg.backend),
            "fast_path": _fast_path_text(self.predictor),
            "model": cfg.weights or f"{cfg.model} (untrained)",
            "cameras": str(len(self.cameras)),
            "input_topic": ", ".join(c.sub.topic_name for c in self.cameras if c.sub is not None),
            "input_reliability": ", ".join(c.reliability or "" for c in self.cameras),
            "labels": ", ".join(active.names) if active else ", ".join(self.labels.texts),
            "label_map_version": str(active.version if active else 0),
        }
        status = diagnostics.NodeStatus(self.get_name(), self.state, self.device, info, cfg.untrained,
                                        self._load_error)
        arr = diagnostics.build(status, self.timings, self._diag_t, list(self.cameras), list(self.depths),
                                self.frames)
        self._diag_t = time.monotonic()
        arr.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(arr)

    def close(self, timeout: float = 1.5) -> bool:
        """Stops the worker (cancelling a CPU frame in hand); True when it ended within `timeout`."""
        return self.worker.join(timeout)
