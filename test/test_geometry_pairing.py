"""lseg_ros.geometry.StampPairer: colour/depth pairing by stamp, live lookups and bag-order streams."""
import threading
from types import SimpleNamespace

import pytest

from lseg_ros.geometry import StampPairer, stamp_ns

MS = 1_000_000


def test_stamp_ns():
    assert stamp_ns(SimpleNamespace(sec=12, nanosec=345)) == 12_000_000_345


def test_lookup_exact_nearest_and_unpaired():
    exact = StampPairer(tolerance_ns=0)
    for t in (100, 133, 166):
        exact.add_depth(t * MS, f"d{t}")
    assert exact.lookup(133 * MS) == "d133"
    assert exact.lookup(134 * MS) is None
    near = StampPairer(tolerance_ns=10 * MS)
    for t in (100, 133, 166):
        near.add_depth(t * MS, f"d{t}")
    assert near.lookup(140 * MS) == "d133"         # 7 ms away
    assert near.lookup(160 * MS) == "d166"         # nearer than 133
    assert near.lookup(150 * MS) is None           # 16-17 ms from both: beyond the tolerance
    assert near.lookup(0) is None
    assert near.counters() == {"paired": 2, "unpaired": 2, "depth_unused": 0, "buffered": 3}
    assert exact.counters()["paired"] == 1 and exact.counters()["unpaired"] == 1


def test_bounded_buffer_counts_unused_depth():
    p = StampPairer(capacity=3)
    p.add_depth(1, "a")
    p.lookup(1)
    for t in (2, 3, 4, 5):
        p.add_depth(t, t)
    assert p.counters() == {"paired": 1, "unpaired": 0, "depth_unused": 1, "buffered": 3}
    assert p.lookup(1) is None and p.lookup(2) is None and p.lookup(3) == 3


def test_stream_colour_first_waits_for_its_depth():
    p = StampPairer(tolerance_ns=0)
    assert p.add_color(10, "c10") == []
    assert p.add_color(20, "c20") == []
    assert p.waiting() == 2
    assert p.add_depth(10, "d10") == [("c10", "d10")]     # exact: decided at once
    assert p.add_depth(25, "d25") == [("c20", None)]      # past 20 without a 20: unpaired
    assert p.add_color(25, "c25") == [("c25", "d25")]     # depth first, colour second
    assert p.waiting() == 0
    assert p.counters()["paired"] == 2 and p.counters()["unpaired"] == 1


def test_stream_nearest_waits_until_the_tolerance_has_passed():
    p = StampPairer(tolerance_ns=5)
    assert p.add_color(100, "c") == []
    assert p.add_depth(98, "d98") == []                   # 2 away, but 101..105 could still come
    assert p.add_depth(104, "d104") == []                 # 4 away: the nearer stays d98
    assert p.add_depth(106, "d106") == [("c", "d98")]     # >= 105 seen: decided
    q = StampPairer(tolerance_ns=5)
    q.add_color(100, "c")
    q.add_depth(90, "far")
    assert q.flush() == [("c", None)]                     # end of stream


def test_stream_without_depth_is_bounded():
    p = StampPairer(capacity=4)
    out = []
    for t in range(10):
        out += p.add_color(t, t)
    assert p.waiting() == 4 and out == [(t, None) for t in range(6)]
    assert p.flush() == [(t, None) for t in range(6, 10)]
    assert p.counters()["unpaired"] == 10


def test_threads_share_one_pairer():
    p = StampPairer(tolerance_ns=0, capacity=10_000)

    def feed():
        for t in range(2000):
            p.add_depth(t, t)

    th = threading.Thread(target=feed)
    th.start()
    th.join()
    found = [p.lookup(t) for t in range(2000)]
    assert found == list(range(2000))


def test_bad_arguments():
    with pytest.raises(ValueError, match="tolerance_ns >= 0 and capacity >= 1"):
        StampPairer(tolerance_ns=-1)
    with pytest.raises(ValueError, match="capacity"):
        StampPairer(capacity=0)


def test_hold_keeps_the_depth_of_a_frame_in_flight():
    """The worker holds a colour stamp while the model runs (seconds on a CPU); 30 Hz depth keeps
    coming; the held stamp's depth (arrived before or during the hold) is still there after."""
    p = StampPairer(tolerance_ns=0, capacity=3)
    p.add_depth(100, "d100")
    p.hold(100)
    p.hold(200)                                  # its depth arrives during inference
    for t in range(101, 131):
        p.add_depth(t if t != 120 else 200, t)
    assert p.counters()["buffered"] == 3 + 2     # capacity + the two held ones (100, 200)
    assert p.lookup(100) == "d100" and p.lookup(200) == 120
    for t in range(131, 140):
        p.add_depth(t, t)
    assert p.lookup(100) is None                 # released: evicted like any other
    near = StampPairer(tolerance_ns=2, capacity=3)
    near.hold(100)
    for t in range(95, 130):
        near.add_depth(t, t)
    assert near.counters()["buffered"] == 3 + 5  # 98..102 are all within the held stamp's tolerance
    assert near.lookup(100) == 100
    unheld = StampPairer(capacity=3)
    unheld.add_depth(100, "d100")
    for t in range(101, 131):
        unheld.add_depth(t, t)
    assert unheld.lookup(100) is None
