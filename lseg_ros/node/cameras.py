"""Per-camera input: the topic layout, the newest-frame slots and the subscriptions.

Each camera has its own one-slot buffer (newest wins; an unprocessed frame it replaces is counted as
dropped). The worker takes the pending frame of EVERY camera at once, so one forward serves all the
cameras that are ready and a camera publishing faster than the others cannot starve them: it only
overwrites its own slot.

Output names: a camera's outputs go beside its image topic, `front/image_raw` -> `front/lseg/mask`,
so the default single camera `image` keeps `lseg/mask` (relative: a namespace or remap moves both).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from .qos import choose_reliability, input_profile


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


class FrameSlots:
    """One newest-frame slot per camera behind one condition: put() by the subscriptions, take_all()
    by the worker (every pending frame at once)."""

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._items: List[Any] = [None] * n
        self.stats = [CameraStats() for _ in range(n)]
        self.lock = threading.Lock()  # guards stats

    def put(self, index: int, item: Any) -> None:
        with self._cond:
            replaced = self._items[index] is not None
            self._items[index] = item
            self._cond.notify()
        with self.lock:
            self.stats[index].received += 1
            self.stats[index].dropped_overwritten += int(replaced)

    def take_all(self, timeout: float) -> Dict[int, Any]:
        """{camera index: item} of every pending frame (waits up to `timeout` for the first)."""
        with self._cond:
            if not any(i is not None for i in self._items):
                self._cond.wait(timeout)
            taken = {i: item for i, item in enumerate(self._items) if item is not None}
            self._items = [None] * len(self._items)
            return taken

    def clear(self) -> None:
        with self._cond:
            self._items = [None] * len(self._items)

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
    """The image subscription of one camera (raw `image` or `image/compressed`)."""

    def __init__(self, node: Node, spec: CameraSpec, slots: FrameSlots, callback_group,
                 warn: Callable[[str], None]) -> None:
        self.node, self.spec, self.slots, self.group, self._warn = node, spec, slots, callback_group, warn
        self.input: Optional[AdaptiveSubscription] = None

    @property
    def sub(self):
        return self.input.sub if self.input is not None else None

    @property
    def reliability(self) -> Optional[str]:
        return self.input.reliability if self.input is not None else None

    def refresh(self, cfg: Dict[str, Any]) -> None:
        transport = cfg["input_transport"]
        topic = self.spec.image_topic + ("/compressed" if transport == "compressed" else "")
        if self.input is None or self.input.topic != topic:
            self.close()
            index = self.spec.index
            self.input = AdaptiveSubscription(
                self.node, CompressedImage if transport == "compressed" else Image, topic,
                lambda m: self.slots.put(index, (m, transport, time.monotonic())), self.group, self._warn)
        self.input.refresh(cfg["input_reliability"], cfg["input_depth"])

    def close(self) -> None:
        if self.input is not None:
            self.input.close()
            self.input = None
