"""Colour/depth pairing by header stamp: exact, or nearest within a tolerance.

An RGB-D driver stamps a colour frame and its aligned depth frame alike, so the exact stamp is the
rule; separate cameras (or drivers that stamp on receipt) need a tolerance. Two ways to use it:

* live (lseg_node): `add_depth` from the depth callback; `hold(stamp)` when the worker takes a
  colour frame, `lookup(stamp)` once it has been segmented (the depth of that stamp has arrived by
  then). `hold` keeps the depth frames within the tolerance of that stamp out of the eviction
  while the model runs: a ViT-L frame on a CPU takes seconds, far longer than a 30-frame buffer of
  30 Hz depth lasts;
* streaming (lseg-segment, bag order): `add_color` and `add_depth` both return the pairs they
  complete; a colour frame waits until a depth stamp at or past stamp + tolerance has been seen
  (no nearer one can come after it, depth arriving in stamp order), and `flush` ends the stream.

Buffers are bounded (`capacity` per side; the oldest goes first) and counted: `paired`,
`unpaired` (colour frames without depth), `depth_unused` (depth frames evicted never paired).
Thread-safe.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

Pair = Tuple[Any, Optional[Any]]


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class StampPairer:
    """Pairs colour frames with the depth frame of the same (or nearest) stamp."""

    def __init__(self, tolerance_ns: int = 0, capacity: int = 30) -> None:
        if tolerance_ns < 0 or capacity < 1:
            raise ValueError(f"need tolerance_ns >= 0 and capacity >= 1, got {tolerance_ns}, {capacity}")
        self.tolerance_ns = int(tolerance_ns)
        self.capacity = int(capacity)
        self._stamps: List[int] = []              # depth stamps, sorted
        self._depth: Dict[int, Any] = {}          # stamp -> depth item
        self._used: set = set()                   # depth stamps paired at least once
        self._held: Deque[int] = deque(maxlen=capacity)   # colour stamps in flight (hold .. lookup)
        self._colors: Deque[Tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self.paired = 0
        self.unpaired = 0
        self.depth_unused = 0

    # -- depth side -------------------------------------------------------------------------
    def add_depth(self, stamp: int, item: Any) -> List[Pair]:
        """Buffer a depth frame; returns the (colour, depth or None) pairs this completes."""
        with self._lock:
            stamp = int(stamp)
            if stamp not in self._depth:
                bisect.insort(self._stamps, stamp)
            self._depth[stamp] = item
            while len(self._stamps) - self._protected() > self.capacity:
                old = self._stamps.pop(next(j for j, s in enumerate(self._stamps) if not self._is_held(s)))
                self._depth.pop(old)
                if old in self._used:
                    self._used.discard(old)
                else:
                    self.depth_unused += 1
            return self._resolve(final=False)

    def _is_held(self, stamp: int) -> bool:
        return any(abs(stamp - h) <= self.tolerance_ns for h in self._held)

    def _protected(self) -> int:
        return sum(1 for s in self._stamps if self._is_held(s)) if self._held else 0

    def hold(self, stamp: int) -> None:
        """Keep the depth frames within the tolerance of `stamp` buffered until `lookup(stamp)`
        (at most `capacity` stamps held; the oldest hold lapses first)."""
        with self._lock:
            self._held.append(int(stamp))

    def _nearest(self, stamp: int) -> Optional[int]:
        i = bisect.bisect_left(self._stamps, stamp)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self._stamps):
                d = abs(self._stamps[j] - stamp)
                if d <= self.tolerance_ns and (best is None or d < abs(best - stamp)):
                    best = self._stamps[j]
        return best

    def _take(self, stamp: int) -> Optional[Any]:
        best = self._nearest(stamp)
        if best is None:
            self.unpaired += 1
            return None
        self.paired += 1
        self._used.add(best)
        return self._depth[best]

    def lookup(self, stamp: int) -> Optional[Any]:
        """The buffered depth item nearest to `stamp` within the tolerance, or None (counted);
        ends a `hold(stamp)`."""
        with self._lock:
            stamp = int(stamp)
            if stamp in self._held:
                self._held.remove(stamp)
            return self._take(stamp)

    # -- streaming colour side --------------------------------------------------------------
    def add_color(self, stamp: int, item: Any) -> List[Pair]:
        """Queue a colour frame; returns the pairs that are decided now (possibly this one)."""
        with self._lock:
            self._colors.append((int(stamp), item))
            out = self._resolve(final=False)
            while len(self._colors) > self.capacity:   # depth stopped coming: decide the oldest
                s, c = self._colors.popleft()
                out.append((c, self._take(s)))
            return out

    def flush(self) -> List[Pair]:
        """Decide every waiting colour frame (end of a stream)."""
        with self._lock:
            return self._resolve(final=True)

    def _resolve(self, final: bool) -> List[Pair]:
        out: List[Pair] = []
        newest = self._stamps[-1] if self._stamps else None
        while self._colors:
            s, c = self._colors[0]
            if not (final or s in self._depth or (newest is not None and newest >= s + self.tolerance_ns)):
                break
            self._colors.popleft()
            out.append((c, self._take(s)))
        return out

    def waiting(self) -> int:
        """Colour frames queued by add_color and not decided yet."""
        with self._lock:
            return len(self._colors)

    def counters(self) -> Dict[str, int]:
        """paired, unpaired, depth_unused, buffered (depth frames held now), for diagnostics."""
        with self._lock:
            return {"paired": self.paired, "unpaired": self.unpaired, "depth_unused": self.depth_unused,
                    "buffered": len(self._stamps)}
