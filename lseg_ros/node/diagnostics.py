"""/diagnostics for lseg_node: one status for the node (state, rate, timings, errors) and one per camera
(received, processed, dropped, latency), what operators' dashboards read."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def _ms(values: List[float], fn) -> str:
    return f"{1000 * float(fn(values)):.1f}" if values else ""


class Lap:
    """Adds the time since the previous call to `stages[name]` (seconds): the node's per-stage clock."""

    def __init__(self, stages: Dict[str, float]) -> None:
        self.stages, self.t = stages, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.t
        self.t = now


class Timings:
    """Per-batch timings since the last diagnostics message, and the last inference error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (monotonic time, frames, inference s, publishing s, {stage: s} of the node's own work)
        self.window: deque = deque(maxlen=2000)
        self.errors = 0
        self.last_error: Tuple[str, float] = ("", 0.0)

    def add(self, frames: int, t_inf: float, t_pub: float, stages: Dict[str, float]) -> None:
        with self.lock:
            self.window.append((time.monotonic(), frames, t_inf, t_pub, stages))

    def error(self, text: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = (text, time.monotonic())


@dataclass(frozen=True)
class NodeStatus:
    """The node as /diagnostics reports it, taken once per message."""

    name: str
    state: str  # lifecycle state label
    device: str
    info: Dict[str, str]  # extra key/values (precision, model, labels, ...)
    untrained: bool
    load_error: str  # why configure failed, or ""


def build(node: NodeStatus, timings: Timings, since: float, cameras: Sequence, depths: Sequence,
          source) -> DiagnosticArray:
    """The DiagnosticArray for the period since `since` (monotonic): one status for the node, one per
    camera (with its depth input's, if any). Resets the cameras' latency lists in `source` (FrameSource)."""
    node_name, state, device = node.name, node.state, node.device
    now = time.monotonic()
    period = max(1e-3, now - since)
    with timings.lock:
        recent = [w for w in timings.window if w[0] > since]
        errors, (err_text, err_time) = timings.errors, timings.last_error
    frames = sum(w[1] for w in recent)
    rate = frames / period
    inf, pub = [w[2] for w in recent], [w[3] for w in recent]
    stage_names = dict.fromkeys(k for w in recent for k in w[4])  # in the order the laps ran
    stages = ", ".join(f"{k} {1000 * sum(w[4].get(k, 0.0) for w in recent) / max(1, frames):.2f}"
                       for k in stage_names)
    per_cam = []
    if source is not None:
        with source.lock:
            for st in source.stats:
                per_cam.append((st.received, st.processed, st.dropped_overwritten, st.dropped_stale,
                                st.dropped_invalid, list(st.latencies)))
                st.latencies.clear()
    lat = [x for c in per_cam for x in c[5]]
    top = DiagnosticStatus(name=f"{node_name}: segmentation", hardware_id=device)
    if node.load_error:
        top.level, top.message = ERROR, node.load_error
    elif state != "active":
        top.level, top.message = OK, f"{state} (not processing)"
    elif err_text and now - err_time < 2 * period + 1.0:
        top.level, top.message = ERROR, err_text
    elif not recent:
        top.level, top.message = WARN, f"no frames processed in the last {period:.1f} s"
    else:
        top.level, top.message = OK, f"{rate:.1f} Hz, latency {1000 * float(np.mean(lat or [0])):.0f} ms"
    if state == "active" and node.untrained and top.level == OK:
        top.level, top.message = WARN, top.message + " (UNTRAINED model: no weights)"
    totals = [sum(c[k] for c in per_cam) for k in range(5)]
    values = {
        "lifecycle_state": state,
        "rate_hz": f"{rate:.2f}",
        "latency_ms_mean": _ms(lat, np.mean), "latency_ms_max": _ms(lat, np.max),
        "inference_ms_mean": _ms(inf, np.mean), "publish_ms_mean": _ms(pub, np.mean),
        "node_stages_ms_per_frame": stages,
        "batch_size_mean": f"{frames / len(recent):.2f}" if recent else "",
        "frames_received": str(totals[0]), "frames_processed": str(totals[1]),
        "dropped_overwritten": str(totals[2]), "dropped_stale": str(totals[3]), "dropped_invalid": str(totals[4]),
        "errors": str(errors), "last_error": err_text, "device": device, **node.info,
    }
    top.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    statuses = [top]
    for i, (cam, c) in enumerate(zip(cameras, per_cam)):
        depth = depths[i] if i < len(depths) else None
        st = DiagnosticStatus(name=f"{node_name}: camera {cam.spec.image_topic}", hardware_id=device)
        st.level, st.message = OK, f"{c[1]} of {c[0]} frames processed"
        if state == "active" and c[0] == 0:
            st.level, st.message = WARN, f"no frames received on {cam.sub.topic_name if cam.sub else cam.spec.image_topic}"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("topic", cam.sub.topic_name if cam.sub else cam.spec.image_topic),
            ("outputs", cam.spec.output_prefix), ("input_reliability", cam.reliability or ""),
            ("frames_received", c[0]), ("frames_processed", c[1]), ("dropped_overwritten", c[2]),
            ("dropped_stale", c[3]), ("dropped_invalid", c[4]),
            ("latency_ms_mean", _ms(c[5], np.mean)), ("latency_ms_p95", _ms(c[5], lambda v: np.percentile(v, 95))))]
        if depth is not None:
            d = depth.status()
            st.values += [KeyValue(key=k, value=v) for k, v in d.items()]
            if state == "active" and d["points_problem"] and st.level == OK:
                st.level, st.message = WARN, st.message + f"; no point cloud: {d['points_problem']}"
        statuses.append(st)
    arr = DiagnosticArray()
    arr.status = statuses
    return arr
