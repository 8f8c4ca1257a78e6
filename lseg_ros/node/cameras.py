"""Per-camera input: the topic layout, the subscriptions and the worker's frame source.

Each camera's subscription keeps its newest frames in DDS (keep-last); the worker takes the newest
frame of EVERY camera that has one at once (`FrameSource`), so one forward serves all the cameras that
are ready and a camera publishing faster than the others cannot starve them: it only replaces its own
frames.

Output names: a camera's outputs go beside its image topic, `front/image_raw` -> `front/lseg/mask`,
so the default single camera `image` keeps `lseg/mask` (relative: a namespace or remap moves both).
"""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from rclpy.callback_groups import CallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from .qos import choose_reliability, input_profile
from .config import NodeConfig


@dataclass(frozen=True)
class CameraSpec:
    index: int
    image_topic: str  # as given (relative names resolve in the node's namespace; remappable)
    output_prefix: str  # '<namespace of image_topic>/lseg', relative when image_topic is


def camera_layout(image_topics: Sequence[str]) -> List[CameraSpec]:
    """CameraSpecs for the `image_topics` parameter. Raises ValueError when two cameras' outputs would
    share names (two image topics in one namespace)."""
    specs: List[CameraSpec] = []
    seen: Dict[str, str] = {}
    for i, topic in enumerate(image_topics):
        topic = topic.strip()
        parent = topic.rsplit("/", 1)[0] if "/" in topic.lstrip("/") else ("/" if topic.startswith("/") else "")
        prefix = (parent.rstrip("/") + "/lseg") if parent else "lseg"
        if prefix in seen:
            raise ValueError(f"image topics {seen[prefix]!r} and {topic!r} are in the same namespace, so their "
                             f"outputs would both be {prefix}/...: give each camera its own namespace "
                             "(e.g. front/image_raw, rear/image_raw)")
        seen[prefix] = topic
        specs.append(CameraSpec(i, topic, prefix))
    return specs


@dataclass
class CameraStats:
    received: int = 0
    processed: int = 0
    dropped_overwritten: int = 0
    dropped_stale: int = 0
    dropped_invalid: int = 0
    latencies: List[float] = field(default_factory=list)  # since the last diagnostics message


class PulledGroup(CallbackGroup):
    """A callback group the executor never serves: its subscriptions stay out of the executor's wait
    set (rclpy's executors ask `can_execute` before adding an entity) and `FrameSource` takes from them."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class FrameSource:
    """The worker's input: waits on every camera's subscription at once and takes the newest frame of
    each camera that has one.

    Frames are pulled when the worker is ready for the next batch, not pushed through the executor
    one callback per message: at 30 Hz the executor's per-message work (wait-set rebuild, take,
    dispatch) cost 19-26% of a core here (rclpy MultiThreadedExecutor, 640x480 rgb8), pulling at the
    inference rate 3-3.5% (benchmarks/input_cost.py). Frames the worker never takes stay in DDS and are
    replaced there (keep-last), so no Python work is spent on them.

    Counting: a frame's publication sequence number tells how many frames its camera published since
    the previous one taken, so `received` counts every frame the camera sent since the first one the
    node took (at first sight of a camera, the frames taken) and `dropped_overwritten` the ones not
    processed because a newer frame came first (with a best-effort camera, also the ones lost in
    transport). Without sequence numbers each frame taken counts once.
    """

    def __init__(self, n: int, context) -> None:
        self.stats = [CameraStats() for _ in range(n)]
        self.lock = threading.Lock()  # guards stats
        self._context = context
        self._last_seq: List[Dict[bytes, int]] = [{} for _ in range(n)]
        self._wait_set = None

    def take_newest(self, cameras: Sequence["CameraInput"], timeout: float) -> Dict[int, Any]:
        """{camera index: (message, transport, monotonic time taken)}: waits up to `timeout` for the
        first camera to have a frame, then takes the newest frame of every camera that has one."""
        subs = [(cam.spec.index, "compressed" if sub.msg_type is CompressedImage else "raw", sub)
                for cam, sub in ((c, c.sub) for c in cameras) if sub is not None]
        if not subs:
            time.sleep(min(timeout, 0.05))
            return {}
        taken: Dict[int, Any] = {}
        try:
            with ExitStack() as stack:
                for _, _, sub in subs:
                    stack.enter_context(sub.handle)
                if self._wait_set is None or self._wait_set[0] != len(subs):
                    self._wait_set = (len(subs), _rclpy.WaitSet(len(subs), 0, 0, 0, 0, 0, self._context.handle))
                ws = self._wait_set[1]
                ws.clear_entities()
                for _, _, sub in subs:
                    ws.add_subscription(sub.handle)
                ws.wait(int(timeout * 1e9))
                ready = set(ws.get_ready_entities("subscription"))
                for index, transport, sub in subs:
                    if sub.handle.pointer in ready:
                        newest = self._drain(index, sub)
                        if newest is not None:
                            taken[index] = (newest, transport, time.monotonic())
        except InvalidHandle:  # a subscription re-created or closed meanwhile: its frames come next time
            pass
        return taken

    def _drain(self, index: int, sub) -> Optional[Any]:
        newest, n = None, 0
        while True:
            got = sub.handle.take_message(sub.msg_type, False)
            if got is None:
                break
            newest, n = got, n + 1
        if newest is None:
            return None
        msg, info = newest
        seq, gid = info.get("publication_sequence_number"), bytes(info.get("publisher_gid", {}).get("data", b""))
        last = self._last_seq[index]
        sent = seq - last[gid] if seq and gid in last and seq > last[gid] else n
        if seq:
            last[gid] = seq
        with self.lock:
            st = self.stats[index]
            st.received += sent
            st.dropped_overwritten += sent - 1
        return msg

    def count(self, index: int, what: str, latency: Optional[float] = None) -> None:
        with self.lock:
            st = self.stats[index]
            setattr(st, what, getattr(st, what) + 1)
            if latency is not None:
                st.latencies.append(latency)


class AdaptiveSubscription:
    """A subscription whose reliability follows its topic's publishers in `auto` mode (qos.py explains
    why), re-checked by `refresh()` twice a second; re-created only when the choice changes."""

    def __init__(self, node: Node, msg_type, topic: str, callback: Callable[[Any], None], callback_group,
                 warn: Callable[[str], None]) -> None:
        self.node, self.msg_type, self.topic, self.callback = node, msg_type, topic, callback
        self.group, self._warn = callback_group, warn
        self.sub = None
        self.key: Optional[tuple] = None
        self.reliability: Optional[str] = None

    def refresh(self, mode: str, depth: int) -> None:
        rels = [i.qos_profile.reliability for i in self.node.get_publishers_info_by_topic(self.topic)]
        rel = choose_reliability(mode, rels, self.reliability)
        if mode == "reliable" and any(r.name == "BEST_EFFORT" for r in rels):
            self._warn(f"input_reliability is reliable but a publisher of {self.topic} is best effort: "
                       "its frames cannot arrive (use input_reliability: auto)")
        key = (rel, depth)
        if key == self.key:
            return
        self.close()
        self.sub = self.node.create_subscription(self.msg_type, self.topic, self.callback,
                                                 input_profile(rel, depth), callback_group=self.group)
        self.key, self.reliability = key, rel
        self.node.get_logger().info(
            f"subscribed to {self.sub.topic_name} ({self.msg_type.__name__}, {rel}, depth {depth}"
            f"{', publishers: ' + ', '.join(r.name.lower() for r in rels) if rels else ''})")

    def close(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub, self.key = None, None


class CameraInput:
    """The image subscription of one camera (raw `image` or `image/compressed`), pulled by `FrameSource`.

    Its DDS keep-last depth is at least 2: a reader whose only slot holds an untaken frame stalled
    for seconds on 640x480 frames with Fast DDS's default transports (frames are fragmented and the
    next one has no room to be assembled); with 2 none stalled (benchmarks/input_cost.py).
    """

    def __init__(self, node: Node, spec: CameraSpec, group: PulledGroup, warn: Callable[[str], None]) -> None:
        self.node, self.spec, self.group, self._warn = node, spec, group, warn
        self.input: Optional[AdaptiveSubscription] = None

    @property
    def sub(self):
        return self.input.sub if self.input is not None else None

    @property
    def reliability(self) -> Optional[str]:
        return self.input.reliability if self.input is not None else None

    def refresh(self, cfg: NodeConfig) -> None:
        transport = cfg.input_transport
        topic = self.spec.image_topic + ("/compressed" if transport == "compressed" else "")
        if self.input is None or self.input.topic != topic:
            self.close()
            self.input = AdaptiveSubscription(
                self.node, CompressedImage if transport == "compressed" else Image, topic,
                lambda m: None, self.group, self._warn)
        self.input.refresh(cfg.input_reliability, max(2, cfg.input_depth))

    def close(self) -> None:
        if self.input is not None:
            self.input.close()
            self.input = None
