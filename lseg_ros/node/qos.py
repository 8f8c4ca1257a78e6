"""QoS for lseg_node: the input subscription that adapts its reliability to the cameras, the outputs.

Why not just the sensor-data profile (best effort): with Fast DDS's default transports a best-effort
reader loses most or all 640x480 frames between two processes, even from a reliable camera
(docs/node.md has the measurements). A reliable reader gets them all from a reliable camera but
nothing from a best-effort one (incompatible QoS). So in `auto` mode the node looks at the
publishers of its input topic (get_publishers_info_by_topic, twice a second) and subscribes
reliable while all of them are reliable, best effort as soon as one is not; when the choice
changes the subscription is re-created. Best-effort cameras with large frames also need bigger
socket buffers on both sides (FASTDDS_BUILTIN_TRANSPORTS="DEFAULT?sockets_size=4MB", set by the
launch file for the node; the camera's side is the user's to set).
"""
from __future__ import annotations

from typing import Iterable, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABLE, BEST_EFFORT = "reliable", "best_effort"


def input_profile(reliability: str, depth: int) -> QoSProfile:
    """Keep-last `depth`, volatile, `reliability` ('reliable' or 'best_effort')."""
    rel = ReliabilityPolicy.RELIABLE if reliability == RELIABLE else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def output_profile(depth: int = 2) -> QoSProfile:
    """Reliable keep-last: both reliable and best-effort subscribers match it."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


LABEL_MAP_HISTORY = 8


def latched_profile() -> QoSProfile:
    """Reliable, transient-local, keep-last LABEL_MAP_HISTORY (the label maps): late subscribers get the last
    ones, newest last. Deeper than 1 because a reliable writer drops an unacknowledged sample once
    its history is full: a label map whose datagram was lost waits for the next heartbeat to be
    repaired, and with depth 1 a label change in between replaced it for good (a 4-minute soak with
    a label change every second saw frames of a version whose map never arrived)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=LABEL_MAP_HISTORY,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def choose_reliability(mode: str, publisher_reliabilities: Iterable[ReliabilityPolicy],
                       current: Optional[str]) -> str:
    """The input reliability for `mode` given the reliabilities of the publishers now on the topic.

    auto: best effort if any publisher is best effort, reliable if all are reliable; with no
    publisher the current choice is kept (no churn when a camera restarts), reliable at first.
    """
    if mode in (RELIABLE, BEST_EFFORT):
        return mode
    rels = list(publisher_reliabilities)
    if not rels:
        return current or RELIABLE
    if any(r == ReliabilityPolicy.BEST_EFFORT for r in rels):
        return BEST_EFFORT
    return RELIABLE
