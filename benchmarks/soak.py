"""Soak test of lseg_node: N minutes of a 30 Hz camera, labels changed every second, a second subscriber
joining and leaving; the node's memory, threads and open files sampled; every frame's ids checked.

    scripts/soak.sh --minutes 10                     # sets up .venv, then runs this
    .venv/bin/python -m benchmarks soak --minutes 1 --warmup 20

- lseg_node (separate process, tiny untrained model unless --model) gets 640x480 rgb8 frames of a real
  photo at 30 Hz from test/fake_camera.py (another process, reliable, as camera drivers publish).
- Every --label-period s this process calls set_labels with a new set (2-8 labels drawn from a fixed
  vocabulary, some with 'a|b' alternatives; seeded, so runs repeat) and times the answer (the switch:
  validation, text encoding, swap) and the first frame that carries the new names.
- The answer's time is split into: request -> the node's callback starts, the callback, the callback's
  end -> the answer here (from the node's log). The set_labels client shares this process's default
  callback group with the frame callbacks (mask checks, the viewer's images), or has one of its own
  (--client-group own); under load the two measured the same (docs/performance.md, the soak).
- Every 20 s a second subscriber (lseg/overlay and lseg/confidence, as rviz) joins for 10 s.
- Every published frame's lseg/mask is checked against its lseg/class_confidences and the label map
  of its version (lseg/labels): the names agree with the map, the map is one this process asked for,
  every mask id is a label of that version or the unlabeled id, and the per-label pixel fractions
  equal the mask's. A frame failing any of these counts as mismatched.
- Every --sample-period s: the node's RSS, thread count and open files (/proc/<pid>).
Prints the figures and writes benchmarks/results/soak_<machine>_<date>.json. Exit status 1 when the node
crashed, a frame mismatched, or the node did not end cleanly on SIGINT.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from benchmarks.harness import ROOT, child_env, claim_domain_id, machine, result_path, write_json

VOCAB = ["floor", "wall", "person", "chair", "table", "window", "door", "ceiling", "plant", "lamp", "cup",
         "bottle", "screen", "book", "bag", "car|vehicle", "road|street", "sky", "tree", "grass", "dog",
         "cat", "food", "plate", "shelf", "sofa|couch", "bed", "picture|painting", "light", "other"]
CRASH_TEXT = ("terminate called", "Traceback", "KeyboardInterrupt", "exception was never retrieved",
              "failed to initialize wait set", "Segmentation fault", "core dumped")


def proc_sample(pid: int) -> Dict[str, float]:
    """RSS (MB), threads and open file descriptors of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return dict(rss_mb=int(fields["VmRSS"].split()[0]) / 1024, threads=int(fields["Threads"]),
                open_files=len(os.listdir(f"/proc/{pid}/fd")))


def pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def switch_parts(calls: List[Dict[str, float]], log: str) -> Dict[str, Dict[str, Optional[float]]]:
    """Where a set_labels call's time goes: request sent -> the node's callback starts (delivery, the
    node's executor, its GIL), the callback (validation, encoding, swap), the callback's end -> the
    answer in this process's executor (delivery, this process's executor). The node logs every call's
    end (a wall-clock stamp) and its time in the callback; calls and log lines pair in order."""
    ends = [(float(m.group(1)), int(m.group(2)) / 1000) for m in re.finditer(
        r"\[(\d+\.\d+)\] \[lseg_node\]: set_labels .*?(\d+) ms in the callback", log)]
    parts: Dict[str, List[float]] = {"to_callback": [], "callback": [], "to_answer": []}
    for call, (end, inside) in zip(calls, ends):
        if "answered" in call:
            parts["to_callback"].append(end - inside - call["sent"])
            parts["callback"].append(inside)
            parts["to_answer"].append(call["answered"] - end)
    return {k: dict(p50=pct(v, 50), p99=pct(v, 99), max=max(v, default=None), n=len(v)) for k, v in parts.items()}


def display_names(labels: List[str]) -> Tuple[str, ...]:
    return tuple(s.split("|")[0].strip() for s in labels)


class FrameChecker:
    """Pairs lseg/mask with lseg/class_confidences by stamp and checks both against the label maps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.maps: Dict[int, Tuple[str, ...]] = {}
        self.allowed: set = set()  # display-name tuples this process asked for (and the initial set)
        self.masks: Dict[Tuple[int, int], Tuple[int, Dict[int, int], int]] = {}
        self.scores: Dict[Tuple[int, int], object] = {}
        self.deferred: Dict[Tuple[int, int], tuple] = {}  # pairs whose label map has not arrived yet
        self.checked = self.mismatched = 0
        self.problems: List[str] = []
        self.first_seen: Dict[Tuple[str, ...], float] = {}  # names -> arrival of their first frame

    def on_map(self, msg) -> None:
        with self.lock:
            self.maps[msg.version] = tuple(e.name for e in sorted(msg.entries, key=lambda e: e.class_id))
            for key in [k for k, (_, sc) in self.deferred.items() if sc.label_set_version == msg.version]:
                self._check_pair(key, *self.deferred.pop(key))

    def on_mask(self, msg) -> None:
        import numpy as np

        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2") if msg.encoding == "mono16" else np.dtype(np.uint8)
        a = np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.step // dtype.itemsize)[:, :msg.width]
        ids, counts = np.unique(a, return_counts=True)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            self.masks[key] = (a.size, dict(zip(ids.tolist(), counts.tolist())), msg.encoding)
            self._check(key)

    def on_scores(self, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            self.first_seen.setdefault(tuple(msg.labels), time.monotonic())
            self.scores[key] = msg
            self._check(key)

    def _bad(self, why: str) -> None:
        self.mismatched += 1
        if len(self.problems) < 20:
            self.problems.append(why)

    def _check(self, key) -> None:
        if key not in self.masks or key not in self.scores:
            return
        mask, s = self.masks.pop(key), self.scores.pop(key)
        if s.label_set_version not in self.maps:  # the map is published first, but on another topic
            self.deferred[key] = (mask, s)
            return
        self._check_pair(key, mask, s)

    def _check_pair(self, key, mask, s) -> None:
        total, counts, _ = mask
        self.checked += 1
        names = tuple(s.labels)
        if self.maps[s.label_set_version] != names:
            return self._bad(f"{key}: names {names} != map v{s.label_set_version} {self.maps[s.label_set_version]}")
        if self.allowed and names not in self.allowed:
            return self._bad(f"{key}: names {names} were never requested")
        stray = [i for i in counts if i >= len(names) and i != s.unlabeled_id]
        if stray:
            return self._bad(f"{key}: mask ids {stray} outside {len(names)} labels (v{s.label_set_version})")
        frac = [counts.get(i, 0) / total for i in range(len(names))]
        if len(s.pixel_fraction) != len(names) or max(abs(a - b) for a, b in zip(frac, s.pixel_fraction)) > 2e-3:
            return self._bad(f"{key}: mask fractions {frac} != class_confidences {list(s.pixel_fraction)}")

    def prune(self, older_than_s: float = 30.0) -> None:
        """Forgets halves of pairs that never completed (a mask without scores: a subscriber lost one);
        a frame whose label map never came is a mismatch."""
        cut = time.time() - older_than_s
        with self.lock:
            for k in [k for k in self.deferred if k[0] < cut]:
                _, sc = self.deferred.pop(k)
                self.checked += 1
                self._bad(f"{k}: version {sc.label_set_version} has no label map after {older_than_s:.0f} s")
            for d in (self.masks, self.scores):
                for k in [k for k in d if k[0] < cut]:
                    del d[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--threads", type=int, default=0, help="node's num_threads (0 = torch default)")
    ap.add_argument("--label-period", type=float, default=1.0)
    ap.add_argument("--sample-period", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="s after which RSS counts as warmed up")
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--client-group", choices=("shared", "own"), default="shared",
                    help="the set_labels client in a callback group of its own, or in the node's default one")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    duration = a.minutes * 60.0
    warmup = min(a.warmup, duration / 2)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences, LabelMap
    from lseg_ros.srv import SetLabels
    from ros_harness import NodeProcess, diagnostics_counter, wait_for

    domain_lock = None  # held while this process runs
    if a.domain is None:
        a.domain, domain_lock = claim_domain_id()
    env = child_env(a.domain)
    node = NodeProcess(env, params=(f"model:={a.model}", "device:=cpu", f"num_threads:={a.threads}"), params_file=False)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=a.domain)
    n = rclpy.create_node("soak", context=ctx)
    check = FrameChecker()
    diags: List = []
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    n.create_subscription(LabelMap, "lseg/labels", check.on_map,
                          QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL))
    n.create_subscription(Image, "lseg/mask", check.on_mask, reliable)
    n.create_subscription(ClassConfidences, "lseg/class_confidences", check.on_scores, reliable)
    n.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m) if len(diags) < 100000 else None, 10)
    client = n.create_client(SetLabels, "set_labels",
                             callback_group=MutuallyExclusiveCallbackGroup() if a.client_group == "own" else None)
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)
    executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    rng = random.Random(a.seed)
    result: Dict = dict(host=machine(), cpus=os.cpu_count(), model=a.model, minutes=a.minutes,
                        rate_hz=a.rate, size=f"{a.width}x{a.height}", client_group=a.client_group, started=time.strftime("%Y-%m-%d %H:%M:%S"))
    samples, switch_s, first_frame_s, viewer_frames = [], [], [], []
    calls: List[Dict[str, float]] = []  # per set_labels call: wall-clock times, matched to the node's log
    label_changes = refused = 0
    camera = None
    crashed = ""
    try:
        wait_for(lambda: n.count_subscribers("image") > 0 or node.proc.poll() is not None, 180, "node subscribed")
        if node.proc.poll() is not None:
            raise RuntimeError(f"lseg_node exited at start:\n{node.log()}")
        assert client.wait_for_service(timeout_sec=30), "set_labels not available"
        wait_for(lambda: check.maps, 30, "the first label map")
        check.allowed.add(next(iter(check.maps.values())))
        camera = subprocess.Popen([sys.executable, str(ROOT / "test" / "fake_camera.py"), "--rate", str(a.rate),
                                   "--width", str(a.width), "--height", str(a.height), "--duration", str(duration)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: check.checked > 0 or node.proc.poll() is not None, 120, "the first frame")
        t0 = time.monotonic()
        next_label, next_sample, next_join = t0, t0, t0 + 10.0
        fut, sent, wanted, viewer, viewer_end = None, 0.0, (), None, 0.0
        pending_first: List[Tuple[Tuple[str, ...], float]] = []
        while time.monotonic() - t0 < duration:
            now = time.monotonic()
            if node.proc.poll() is not None:
                crashed = f"lseg_node exited with {node.proc.returncode} after {now - t0:.0f} s"
                break
            if fut is not None and fut.done():
                r = fut.result()
                if r.success:
                    label_changes += 1
                    switch_s.append(now - sent)
                    pending_first.append((wanted, sent))
                else:
                    refused += 1
                    print(f"set_labels refused: {r.message}", flush=True)
                fut = None
            if fut is None and now >= next_label:
                labels = rng.sample(VOCAB, rng.randint(2, 8))
                wanted = display_names(labels)
                check.allowed.add(wanted)
                sent, next_label = now, next_label + a.label_period
                call = dict(sent=time.time())
                calls.append(call)
                fut = client.call_async(SetLabels.Request(labels=labels))
                fut.add_done_callback(lambda f, c=call: c.__setitem__("answered", time.time()))
            with check.lock:
                for item in list(pending_first):
                    names, when = item
                    if check.first_seen.get(names, 0) >= when:
                        first_frame_s.append(check.first_seen[names] - when)
                        pending_first.remove(item)
                    elif now - when > 60:
                        pending_first.remove(item)  # replaced before any frame used it
                for names in [k for k, v in check.first_seen.items() if now - v > 120]:
                    del check.first_seen[names]  # the same set may come back later: time it afresh
            if viewer is None and now >= next_join:
                got = [0]
                viewer = [n.create_subscription(Image, "lseg/overlay", lambda m, g=got: g.__setitem__(0, g[0] + 1), 2),
                          n.create_subscription(Image, "lseg/confidence", lambda m: None, 2), got]
                viewer_end, next_join = now + 10.0, next_join + 20.0
            elif viewer is not None and now >= viewer_end:
                n.destroy_subscription(viewer[0])
                n.destroy_subscription(viewer[1])
                viewer_frames.append(viewer[2][0])
                viewer = None
            if now >= next_sample:
                s = dict(t=round(now - t0, 1), **proc_sample(node.proc.pid), checked=check.checked,
                         mismatched=check.mismatched, label_changes=label_changes)
                samples.append(s)
                print(f"[{s['t']:6.0f} s] RSS {s['rss_mb']:.0f} MB, {s['threads']} threads, {s['open_files']} files, "
                      f"{s['checked']} frames checked, {s['mismatched']} mismatched, {label_changes} label changes",
                      flush=True)
                next_sample += a.sample_period
                check.prune()
            time.sleep(0.01)
        if viewer is not None:
            viewer_frames.append(viewer[2][0])
        time.sleep(2.0)  # the last frames in flight
        samples.append(dict(t=round(time.monotonic() - t0, 1), **proc_sample(node.proc.pid), checked=check.checked,
                            mismatched=check.mismatched, label_changes=label_changes)) if node.proc.poll() is None else None
    finally:
        cam_out = ""
        if camera is not None:
            if camera.poll() is None:
                camera.send_signal(signal.SIGINT)
            try:
                cam_out = camera.communicate(timeout=15)[0]
            except subprocess.TimeoutExpired:
                camera.kill()
                cam_out = camera.communicate()[0]
        counters = {k: diagnostics_counter(diags, "lseg_node", k) for k in (
            "frames_received", "frames_processed", "dropped_overwritten", "dropped_stale", "dropped_invalid", "errors")}
        t_stop = time.monotonic()
        alive = node.proc.poll() is None
        code = node.stop()
        stop_s = time.monotonic() - t_stop if alive else None
        executor.shutdown(timeout_sec=2)
        n.destroy_node()
        rclpy.try_shutdown(context=ctx)

    log = node.log()
    crash_lines = [ln for ln in log.splitlines() if any(s in ln for s in CRASH_TEXT)]
    published = next((int(w) for line in cam_out.splitlines() if line.startswith("published")
                      for w in line.split()[1:2]), None)
    warm = next((s for s in samples if s["t"] >= warmup), samples[-1] if samples else None)
    end = samples[-1] if samples else None
    result.update(
        frames_in=published, node_counters=counters, frames_checked=check.checked,
        mismatched_frames=check.mismatched, mismatch_examples=check.problems, label_changes=label_changes,
        label_requests_refused=refused,
        label_switch_s=dict(p50=pct(switch_s, 50), p99=pct(switch_s, 99), max=max(switch_s, default=None), n=len(switch_s)),
        label_switch_parts_s=switch_parts(calls, log),
        first_frame_with_new_labels_s=dict(p50=pct(first_frame_s, 50), p99=pct(first_frame_s, 99), n=len(first_frame_s)),
        second_subscriber_joins=len(viewer_frames), overlays_per_join=viewer_frames,
        rss_mb_after_warmup=warm and warm["rss_mb"], warmup_s=warm and warm["t"], rss_mb_end=end and end["rss_mb"],
        rss_growth_mb=(end["rss_mb"] - warm["rss_mb"]) if warm and end else None,
        rss_mb_max=max((s["rss_mb"] for s in samples), default=None),
        threads_start_end=(samples[0]["threads"], end["threads"]) if samples else None,
        open_files_start_end=(samples[0]["open_files"], end["open_files"]) if samples else None,
        crashes=1 if crashed else 0, crash=crashed, crash_lines=crash_lines[:10],
        shutdown=dict(exit_code=code, seconds=stop_s), load_average=os.getloadavg(), samples=samples,
        note="shared machine: figures are indicative; ratios within this run only")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1, default=str))
    write_json(a.out or result_path("soak"), result)
    if domain_lock is not None:
        domain_lock.close()
    ok = not crashed and not crash_lines and check.mismatched == 0 and code == 0 and check.checked > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
