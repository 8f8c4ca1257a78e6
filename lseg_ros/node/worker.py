"""The inference worker: two threads in a pipeline, one batched forward for the newest frame of every
ready camera (pulled from DDS by cameras.FrameSource when the worker is ready for them).

- `lseg_infer` takes the node's `BatchContext` once per batch (predictor, label set in force, settings,
  cameras, outputs), takes the newest frame of every ready camera, drops stale ones (`max_frame_age`)
  and ones that do not decode (named in the log, counted), and submits the batch (`Predictor.submit`:
  on CUDA it returns at once, the GPU computing meanwhile; on the CPU it computes the batch);
- `lseg_publish` waits for the batch's results and publishes each camera's outputs with its own header.
They hand over through one slot (`Handoff`): `lseg_infer` takes new frames only once the slot is empty,
so at most two batches are in flight (one computing, one queued behind it on the GPU) while the
previous one is published, and nothing queues up: frames not taken are replaced inside DDS. When
`submit` computed the batch itself (the CPU: `PendingBatch.in_background` is False), `lseg_infer` also
waits until that batch is published: the two stages then run one after the other, so the publishing
never shares the cores with a forward (overlapping them was measured no faster on 2 cores:
docs/performance.md, the node on the CPU).
Every frame's mask ids, class_confidences and label-map version come from the one label set taken
with its batch. An exception inside inference (out of memory on a large frame, ...) is reported in
/diagnostics and the next batch goes on.

Stopping mid-frame: on the CPU a ViT-L/16 frame takes seconds, so the network gets forward pre-hooks
on its stages that raise `Cancelled` once `cancel` is set (a deactivate, cleanup or Ctrl-C then ends
the frame within one stage, a few hundred ms, instead of after the whole forward); batches waiting to
be published are dropped. Not installed on CUDA, where a frame takes milliseconds and hooks would stand
in the way of compiled graphs.
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rclpy.time import Time

from .. import imaging
from ..model.render import OverlayStyle, RenderRequest
from .config import NodeConfig
from .diagnostics import Lap, Timings
from .labels import ActiveLabels

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


@dataclass(frozen=True)
class BatchContext:
    """What one batch needs from the node, taken at once (LSegNode.batch_context)."""

    predictor: Any
    labels: ActiveLabels
    cfg: NodeConfig
    cameras: Sequence[Any]  # CameraInput
    outputs: Sequence[Any]  # CameraOutputs
    depths: Sequence[Any]  # Optional[DepthInput] per camera, or empty
    source: Any  # FrameSource


@dataclass(frozen=True)
class WorkerHooks:
    """What the worker tells the node: bad frames, one-time warnings, inference errors, timings."""

    frame_error: Callable[[str], None]
    warn_once: Callable[[Any, str], None]
    report_error: Callable[[str], None]
    timings: Timings
    ok: Callable[[], bool]  # rclpy's context is still up


@dataclass
class _Frame:
    cam: int
    header: Any
    image: Any
    order: str
    stamp: Time
    t_received: float


@dataclass
class _Batch:
    ctx: BatchContext
    frames: List[_Frame]
    heat: Dict[int, Dict[str, Tuple[Any, int]]]
    pending: Any  # PendingBatch
    t0: float
    stages: Dict[str, float] = field(default_factory=dict)


class Handoff:
    """One item between two threads: `put` into an empty slot, `take` empties it; never a queue.
    An item put with `hold=True` keeps the slot taken until the taker says `done`, so the putting
    thread's next step runs after the taker's, not beside it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[_Batch] = None
        self._held = False

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None and not self._held, timeout)

    def put(self, item: _Batch, hold: bool = False) -> None:
        with self._cond:
            self._item, self._held = item, hold
            self._cond.notify_all()

    def done(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def take(self, timeout: float) -> Optional[_Batch]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None, timeout):
                return None
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    @property
    def full(self) -> bool:
        return self._item is not None


class InferenceWorker:
    """The two threads (outside the executor). `context` gives the node's BatchContext, or None while
    the node cannot process (unconfigured, no outputs); `clock` is the node's clock."""

    def __init__(self, context: Callable[[], Optional[BatchContext]], clock, hooks: WorkerHooks) -> None:
        self.context, self.clock, self.hooks = context, clock, hooks
        self.stop = threading.Event()
        self.cancel = threading.Event()  # ends the batches in hand (deactivate, cleanup, shutdown)
        self.handoff = Handoff()
        self._active = {"infer": threading.Event(), "publish": threading.Event()}
        self.threads = [threading.Thread(target=self._guarded, args=(self._infer_step, "infer"), name="lseg_infer",
                                         daemon=True),
                        threading.Thread(target=self._guarded, args=(self._publish_step, "publish"),
                                         name="lseg_publish", daemon=True)]
        for t in self.threads:
            t.start()

    @property
    def busy(self) -> bool:
        """A batch is being taken, computed, waiting or published."""
        return any(e.is_set() for e in self._active.values()) or self.handoff.full

    def _guarded(self, step: Callable[[], None], name: str) -> None:
        while not self.stop.is_set():
            try:
                step()
            except Cancelled:
                pass
            except Exception as e:  # never let the worker die: report, count, go on
                if self.stop.is_set() or not self.hooks.ok():
                    return
                self.hooks.report_error(f"inference failed: {type(e).__name__}: {e}")
            finally:
                self._active[name].clear()

    # ---- stage 1: frames in, batch submitted ---------------------------------------------------
    def _infer_step(self) -> None:
        if not self.handoff.wait_empty(0.1):
            return
        ctx = self.context()
        if ctx is None or self.cancel.is_set():
            time.sleep(0.05)
            return
        items = ctx.source.take_newest(ctx.cameras, timeout=0.1)
        if not items:
            return
        self._active["infer"].set()
        ctx = self.context()  # again: the labels and settings in force when the frames were taken
        if ctx is None or self.cancel.is_set():
            return
        batch = self._submit(ctx, items)
        if batch is not None and not self.cancel.is_set():
            # A batch computed on this thread (the CPU) is published before the next is taken.
            self.handoff.put(batch, hold=not batch.pending.in_background)

    def _decode(self, ctx: BatchContext, items, stages: Dict[str, float]) -> List[_Frame]:
        cfg, frames = ctx.cfg, []
        for cam, (msg, kind, t_received) in sorted(items.items()):
            stamp = Time.from_msg(msg.header.stamp, clock_type=self.clock.clock_type)
            age = (self.clock.now() - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0 else 0.0
            if cfg.max_frame_age > 0 and age > cfg.max_frame_age:
                ctx.source.count(cam, "dropped_stale")
                self.hooks.warn_once("stale", f"dropping frames older than max_frame_age={cfg.max_frame_age} s "
                                              f"(this one: {age:.2f} s). If every frame is dropped, the camera's "
                                              "clock is not the node's: set max_frame_age: 0")
                continue
            lap = Lap(stages)
            try:
                if kind == "compressed":
                    image, order = imaging.decode_compressed(msg.format, msg.data, cfg.max_image_pixels)
                else:
                    image, order = imaging.decode_image(msg.encoding, msg.height, msg.width, msg.step,
                                                        bool(msg.is_bigendian), msg.data, cfg.max_image_pixels)
            except imaging.ImageError as e:
                ctx.source.count(cam, "dropped_invalid")
                self.hooks.frame_error(f"dropped frame of {ctx.cameras[cam].spec.image_topic} (stamp "
                                       f"{stamp.nanoseconds * 1e-9:.3f}, frame_id '{msg.header.frame_id}'): {e}")
                continue
            lap("decode")
            depth = ctx.depths[cam] if ctx.depths else None
            if depth is not None and ctx.outputs[cam].points.get_subscription_count() > 0:
                depth.hold(msg.header.stamp)  # its depth frame must outlast a slow (CPU) inference
            frames.append(_Frame(cam, msg.header, image, order, stamp, t_received))
        return frames

    def _submit(self, ctx: BatchContext, items) -> Optional[_Batch]:
        stages: Dict[str, float] = {}
        frames = self._decode(ctx, items, stages)
        if not frames:
            return None
        names, labels, cfg = ctx.labels.names, ctx.labels, ctx.cfg
        heat = {}
        for f in frames:
            heat[f.cam], missing = ctx.outputs[f.cam].wanted_heatmaps(names)
            for key in missing:
                self.hooks.warn_once(("heat", key, labels.version),
                                     f"heatmap label {key!r} is not in the labels {list(names)}")
        want_probs = sorted({idx for h in heat.values() for _, idx in h.values()})
        outs = [ctx.outputs[f.cam] for f in frames]
        render = RenderRequest(
            class_ids=any(o.mask.get_subscription_count() > 0 for o in outs), min_confidence=cfg.min_confidence,
            overlay=OverlayStyle(labels.colors, cfg.overlay_alpha)
            if any(o.overlay.get_subscription_count() > 0 for o in outs) else None)
        want_features = any(o.features.get_subscription_count() > 0 for o in outs)
        t0 = time.perf_counter()
        pending = ctx.predictor.submit([f.image for f in frames], labels.label_set,
                                       channel_orders=[f.order for f in frames], want_probs=want_probs or False,
                                       features_stride=cfg.features_stride if want_features else None,
                                       render=render, max_side=cfg.max_side_or_none)
        return _Batch(ctx, frames, heat, pending, t0, stages)

    # ---- stage 2: results out ------------------------------------------------------------------
    def _publish_step(self) -> None:
        batch = self.handoff.take(0.1)
        if batch is None:
            return
        self._active["publish"].set()
        try:
            if not self.cancel.is_set():
                self._publish(batch)
        finally:
            self.handoff.done()

    def _publish(self, batch: _Batch) -> None:
        preds = batch.pending.result()
        t_inf = time.perf_counter() - batch.t0
        ctx, stages = batch.ctx, batch.stages
        for f, pred in zip(batch.frames, preds):
            if self.cancel.is_set():
                return
            out = ctx.outputs[f.cam]
            out.publish(f.header, f.image, f.order, pred, ctx.labels, batch.heat[f.cam], ctx.cfg, stages)
            depth = ctx.depths[f.cam] if ctx.depths else None
            if depth is not None and out.points.get_subscription_count() > 0:
                lap = Lap(stages)
                rgb = f.image if f.order == "rgb" else f.image[:, :, ::-1]
                cloud = depth.cloud(f.header, rgb, pred, ctx.labels, ctx.cfg, self.hooks.frame_error)
                if cloud is not None:
                    out.points.publish(cloud)
                lap("points")
            done = self.clock.now()
            latency = ((done - f.stamp).nanoseconds * 1e-9 if f.stamp.nanoseconds > 0
                       else time.monotonic() - f.t_received)
            ctx.source.count(f.cam, "processed", latency)
        self.hooks.timings.add(len(batch.frames), t_inf, time.perf_counter() - batch.t0 - t_inf, stages)

    def join(self, timeout: float) -> bool:
        """Stops both threads (cancelling the frame in hand); True when they ended within `timeout`."""
        self.stop.set()
        self.cancel.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def make_predictor_cancellable(predictor, worker: InferenceWorker) -> Optional[CancelHooks]:
    """Hooks for mid-frame stops on the CPU (see the module docstring); None on CUDA."""
    if getattr(predictor.device, "type", "cpu") != "cpu":
        return None
    return CancelHooks(predictor.net, worker.cancel)
