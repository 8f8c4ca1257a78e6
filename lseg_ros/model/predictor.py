"""Predictor: images as robots see them (HxWx3 uint8) -> class mask, confidence, scores, images.

Single pass (default, for live use), for one image or a batch of cameras in ONE forward: frames are
uploaded as uint8 (transfer.py), normalised, shrunk and padded on the device (frames.py), run through
the text-independent image path (fastpath.py), scored against the labels (`LSegNet.score`), and each
frame's results are computed from its logits on the device (postprocess.py), including the images a
caller asks for (render.py: class ids, overlay), then copied back once.

Two ways to call it: `predict_batch` / `predict` return the results; `submit` returns at once with a
`PendingBatch` whose `result()` waits for them. On CUDA nothing in `submit` waits for the GPU, so a
caller can prepare and submit batch N+1 while batch N computes and batch N-1's results are used
(the node's worker does; benchmarks/gpu_fastpath.py measures both). On the CPU `submit` computes
the batch before returning.

Precision (`precision="auto"`): fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; the image
path's weights are converted once (fastpath.py); the text tower and the label step stay float32.
Every option and its automatic choice: options.py.

`protocol="reference"` runs the reference evaluation (docs/model.md §3.2, reference.py).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .cpu_attention import restore_attention
from .fastpath import ImagePath, convert_image_path, image_dtype, image_modules
from .frames import BatchBuilder, FrameSize, check_image, check_order, normalize_image
from .lseg import LSegNet
from .onnx_runtime import OnnxImagePath
from .options import PredictorOptions
from .postprocess import FusedSummary, WantProbs, prob_indices, summarize, summarize_upsampled
from .prepack import packed_dtype, unpack_linears
from .reference import REFERENCE_SCALES, reference_logits
from .render import RenderRequest, as_published, render_device, render_host
from .text import LabelSet, encode_label_set
from .transfer import HostRing, PendingBatch

log = logging.getLogger(__name__)

__all__ = ["Prediction", "Predictor", "PredictorOptions", "PendingBatch", "RenderRequest", "check_image",
           "normalize_image", "REFERENCE_SCALES"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result at the input resolution. Per-class arrays are indexed like `labels.names`.

    mean_confidence[c]: mean winning probability over the pixels labelled c (0 if none);
    max_confidence[c]: highest probability of c at any pixel.
    """

    mask: np.ndarray  # (H, W) label index: uint8 for <= 256 labels, int16 up to 32768, else int32
    confidence: np.ndarray  # (H, W) float32 softmax probability of the winning label
    # want_probs=True: (N, H, W) float32; want_probs=[i, ...]: {i: (H, W) float32}; else None.
    # Either way probs[i] is label i's map.
    probs: Union[None, np.ndarray, Dict[int, np.ndarray]]
    pixel_fraction: np.ndarray  # (N,) float32
    mean_confidence: np.ndarray  # (N,) float32
    max_confidence: np.ndarray  # (N,) float32
    labels: LabelSet
    # features_stride=s: (D, ceil(H/s), ceil(W/s)) float16 unit-norm pixel embeddings; else None.
    features: Optional[np.ndarray] = None
    # render=RenderRequest(class_ids=True): (H, W) uint8 (<= 254 labels) or uint16 ids, unlabeled 255/65535
    class_ids: Optional[np.ndarray] = None
    # render=RenderRequest(overlay=...): (H, W, 3) uint8 RGB, mask colours blended, no legend
    overlay: Optional[np.ndarray] = None


def _features(emb: torch.Tensor, size: FrameSize, stride: int) -> torch.Tensor:
    """(D, PH/2, PW/2) embeddings -> (D, ceil(h/s), ceil(w/s)) area-resized, re-normalised, float16."""
    h, w, rh, rw = size
    f = emb[:, :math.ceil(rh / 2), :math.ceil(rw / 2)]
    target = (math.ceil(h / stride), math.ceil(w / stride))
    if tuple(f.shape[1:]) != target:
        f = F.adaptive_avg_pool2d(f.unsqueeze(0), target)[0]
    return F.normalize(f, dim=0).half()


def _image_logits(logits: torch.Tensor, size: FrameSize) -> torch.Tensor:
    """(1, N, PH, PW) logits of a padded frame -> (N, h, w) at the frame's own resolution."""
    h, w, rh, rw = size
    out = logits[:, :, :rh, :rw]
    if (rh, rw) != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return out[0]


class Predictor:
    """Wraps an `LSegNet` with device, precision, fast paths, label cache and pre/post-processing.

    The Predictor owns the network it is given: it converts it in place (precision, packed layers,
    memory format, compiled code). Two Predictors need two networks, e.g.
    `Predictor(copy.deepcopy(net), options=PredictorOptions(precision="fp32"))` or the file loaded twice.
    (A net taken over from another Predictor is unpacked and restored where that can be undone; after a
    conversion to fp16/bf16 an fp32 Predictor is refused.)

    Args:
        options: a `PredictorOptions` (options.py: every switch, its automatic choice and where it
            applies); keyword arguments are shorthand for fields of it (`Predictor(net, precision="fp32")`).
    """

    def __init__(self, net: LSegNet, device: Union[str, torch.device] = "cpu",
                 options: Optional[PredictorOptions] = None, **option_fields) -> None:
        from .devices import resolve_device
        self.device = resolve_device(device)
        wanted = (options or PredictorOptions()).with_(**option_fields)
        onnx_path = None
        if wanted.onnx is not None:  # the image path in ONNX Runtime; the label step and post stay torch's
            onnx_path = OnnxImagePath.for_net(wanted.onnx, net, self.device, wanted.input_size)
            wanted = wanted.for_onnx(onnx_path.input_size)
        self.options = wanted.resolve(self.device)
        o = self.options
        if o.dtype == torch.float32 and image_dtype(net) != torch.float32:
            raise ValueError(f"this LSegNet's image weights were converted to {image_dtype(net)} by another "
                             "Predictor; build or load the net again for fp32")
        if packed_dtype(image_modules(net)) not in (None, o.dtype) or not o.prepack:
            unpack_linears(image_modules(net))  # packed by another Predictor for another precision or device
        if not o.cpu_attention:
            restore_attention(image_modules(net))
        self.net = net.to(self.device).eval()
        convert_image_path(self.net, o.dtype)
        self.image_path = onnx_path or ImagePath(self.net, self.device, o.dtype, channels_last=o.channels_last,
                                                 compile=o.compile, cuda_graphs=o.cuda_graphs, prepack=o.prepack,
                                                 cpu_attention=o.cpu_attention)
        self.backend = onnx_path.description if onnx_path else "torch"
        # False where the kernel is unavailable (and with ONNX Runtime)
        self.cpu_attention = getattr(self.image_path, "kernel_attention", 0) > 0
        self.frames = BatchBuilder(net.config.mean, net.config.std, self.device, o.dtype)
        self.ring = HostRing(self.device)
        self._summary = FusedSummary(compile=o.compile_post) if self.device.type != "cpu" else None
        self.profile = o.profile
        self.stage_times: Dict[str, float] = {}
        self._cache: "OrderedDict[tuple, LabelSet]" = OrderedDict()
        self._lock = threading.Lock()  # label cache
        self._run_lock = threading.Lock()  # the ring, static buffers (CUDA graphs)

    # ---- the options in force ------------------------------------------------------
    precision = property(lambda self: self.options.precision)
    dtype = property(lambda self: self.options.dtype)
    input_size = property(lambda self: self.options.input_size)
    max_side = property(lambda self: self.options.max_side)
    channels_last = property(lambda self: self.options.channels_last)
    prepacked = property(lambda self: self.options.prepack)

    # ---- labels ------------------------------------------------------------------
    def encode_labels(self, labels: Sequence[str], templates: Optional[Sequence[str]] = None) -> LabelSet:
        """Validated, encoded, cached label set (LRU keyed by the label strings and templates)."""
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of strings, not one string ({labels!r})")
        key = (tuple(labels), None if templates is None else tuple(templates))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        # no_grad, not inference_mode: the embeddings may later meet autograd (training tools).
        with torch.no_grad():
            label_set = encode_label_set(self.net.text, list(labels), templates)
        with self._lock:
            self._cache[key] = label_set
            while len(self._cache) > self.options.cache_size:
                self._cache.popitem(last=False)
        log.debug("encoded %d labels (version %d)", len(label_set), label_set.version)
        return label_set

    def _label_set(self, labels: Union[LabelSet, Sequence[str]]) -> LabelSet:
        return labels if isinstance(labels, LabelSet) else self.encode_labels(labels)

    # ---- images ------------------------------------------------------------------
    def to_tensor(self, image: np.ndarray, channel_order: str = "rgb") -> torch.Tensor:
        """HxWx3 uint8 -> (1, 3, H, W) float32 normalised, on the device."""
        return normalize_image(image, self.frames.mean, self.frames.std, self.device, channel_order)

    def _clock(self):
        """Stage clock for `profile`: CUDA events on the GPU (no syncs), perf_counter on the CPU."""
        if not self.profile:
            return None
        if self.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _stages(self, marks: List[Tuple[str, object]]) -> Dict[str, float]:
        if self.device.type == "cuda":
            return {name: marks[i][1].elapsed_time(marks[i + 1][1]) * 1e-3 for i, (name, _) in enumerate(marks[:-1])}
        return {name: marks[i + 1][1] - marks[i][1] for i, (name, _) in enumerate(marks[:-1])}

    # ---- inference ---------------------------------------------------------------
    def submit(self, images: Sequence[np.ndarray], labels: Union[LabelSet, Sequence[str]],
               channel_orders: Union[str, Sequence[str]] = "rgb", want_probs: WantProbs = False,
               features_stride: Optional[int] = None, render: Optional[RenderRequest] = None,
               max_side: Union[int, None, Literal["default"]] = "default") -> PendingBatch:
        """Segment several frames (any sizes) in ONE forward; returns a PendingBatch whose `result()`
        gives one `Prediction` per frame, each at its own input's resolution. `want_probs`: True (all
        labels) or label indices (heatmaps); `render`: images built with the results (render.py);
        `max_side`: this batch's bound (default: the options'). Read each result before submitting
        more than `self.ring` has slots (3): their host buffers are reused after that."""
        if isinstance(images, np.ndarray) or not len(images):
            raise TypeError("images must be a non-empty list of HxWx3 uint8 arrays")
        for im in images:
            check_image(im)
        orders = [channel_orders] * len(images) if isinstance(channel_orders, str) else list(channel_orders)
        if len(orders) != len(images):
            raise ValueError(f"{len(orders)} channel orders for {len(images)} images")
        for o in orders:
            check_order(o)
        if features_stride is not None and (not isinstance(features_stride, int) or features_stride < 1):
            raise ValueError(f"features_stride must be a positive int, got {features_stride!r}")
        if max_side == "default":
            max_side = self.options.max_side
        elif max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        labels = self._label_set(labels)
        n = len(labels)
        index = prob_indices(want_probs, n)
        render = render if render is not None and not render.empty else None
        text = labels.embeddings.to(self.device)
        with self._run_lock, torch.inference_mode():
            marks = [("upload", self._clock())]
            slot = self.ring.acquire()
            frames = self.ring.upload(slot, images)
            batch, sizes = self.frames(frames, orders, max_side, self.options.input_size)
            marks.append(("forward", self._clock()))
            emb = self.image_path(batch)
            marks.append(("post", self._clock()))
            low = self.net.score(emb, text, upsample=False)
            out: Dict[str, torch.Tensor] = {}
            for i, size in enumerate(sizes):
                r = self._summarize(low[i], size, want_probs, index)
                out.update({f"{i}/mask": r.mask, f"{i}/confidence": r.confidence, f"{i}/stats": r.stats})
                if r.probs is not None:
                    out[f"{i}/probs"] = r.probs
                if features_stride is not None:
                    out[f"{i}/features"] = _features(emb[i], size, features_stride)
                if render is not None and self.device.type != "cpu":
                    for k, v in render_device(r.mask, r.confidence, frames[i], orders[i], n, render).items():
                        out[f"{i}/{k}"] = v
            marks.append(("download", self._clock()))
            readback = self.ring.download(slot, out)
            marks.append(("end", self._clock()))

        def finish() -> List[Prediction]:
            arrays = readback.arrays()
            if self.profile:
                self.stage_times = self._stages(marks)
            preds = []
            for i, image in enumerate(images):
                mask, conf, stats = arrays[f"{i}/mask"], arrays[f"{i}/confidence"], arrays[f"{i}/stats"]
                probs = arrays.get(f"{i}/probs")
                if probs is not None and want_probs is not True:
                    probs = {j: probs[k] for k, j in enumerate(index)}
                extra = {k: as_published(k, arrays[f"{i}/{k}"]) for k in ("class_ids", "overlay") if f"{i}/{k}" in arrays}
                if render is not None and self.device.type == "cpu":
                    extra = render_host(mask, conf, image, orders[i], n, render)
                preds.append(Prediction(mask=mask, confidence=conf, probs=probs, pixel_fraction=stats[0],
                                        mean_confidence=stats[1], max_confidence=stats[2], labels=labels,
                                        features=arrays.get(f"{i}/features"), **extra))
            return preds
        return PendingBatch(finish, readback)

    def _summarize(self, low: torch.Tensor, size: FrameSize, want_probs: WantProbs, index):
        """One frame's half-resolution logits (N, lh, lw) -> DeviceResult at the frame's resolution.
        CPU: in bands of rows (no full-size logits); GPU: one fused pass."""
        if self._summary is not None:
            return self._summary(low, size, index)
        return summarize_upsampled(low, size[2:], want_probs, out_size=size[:2])

    def predict_batch(self, images: Sequence[np.ndarray], labels: Union[LabelSet, Sequence[str]],
                      channel_orders: Union[str, Sequence[str]] = "rgb", want_probs: WantProbs = False,
                      features_stride: Optional[int] = None, render: Optional[RenderRequest] = None) -> List[Prediction]:
        """`submit(...).result()`: the predictions of several frames, one forward."""
        return self.submit(images, labels, channel_orders, want_probs, features_stride, render).result()

    def predict(self, image: np.ndarray, labels: Union[LabelSet, Sequence[str]], channel_order: str = "rgb",
                want_probs: WantProbs = False, protocol: Literal["single", "reference"] = "single",
                features_stride: Optional[int] = None, render: Optional[RenderRequest] = None,
                **reference_kw) -> Prediction:
        """Segment one image (a batch of one). `labels` is a LabelSet (or strings, encoded via the cache)."""
        if protocol == "single" and not reference_kw:
            return self.predict_batch([image], labels, channel_order, want_probs, features_stride, render)[0]
        if features_stride is not None or render is not None:
            raise ValueError("features_stride and render are only available with protocol='single'")
        labels = self._label_set(labels)
        logits = self.logits(image, labels, channel_order, protocol, **reference_kw)
        with torch.inference_mode():
            r = summarize(logits, want_probs)
            a = {k: t.cpu().numpy() for k, t in (("mask", r.mask), ("confidence", r.confidence), ("stats", r.stats))}
            probs = None if r.probs is None else r.probs.cpu().numpy()
        if probs is not None and want_probs is not True:
            probs = {j: probs[k] for k, j in enumerate(r.prob_index)}
        return Prediction(a["mask"], a["confidence"], probs, *a["stats"], labels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float32, H, W multiples of 32 -> (B, N, H, W) float32 logits."""
        with torch.inference_mode():
            return self.net.score(self.image_path(x.to(self.dtype)), text)

    def logits(self, image: np.ndarray, labels: LabelSet, channel_order: str = "rgb",
               protocol: Literal["single", "reference"] = "single", **reference_kw) -> torch.Tensor:
        """(N, H, W) float32 logits at input resolution (reference: mean over scales and flips)."""
        check_image(image)
        check_order(channel_order)
        text = self._label_set(labels).embeddings.to(self.device)
        if protocol == "reference":
            x = self.to_tensor(image, channel_order)
            with self._run_lock:
                return reference_logits(self.forward, self.frames.pad, x, text, **reference_kw)[0]
        if protocol != "single":
            raise ValueError(f"protocol must be 'single' or 'reference', got {protocol!r}")
        if reference_kw:
            raise TypeError(f"unexpected options for protocol='single': {sorted(reference_kw)}")
        with self._run_lock, torch.inference_mode():
            frame = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
            batch, sizes = self.frames([frame], [channel_order], self.options.max_side, self.options.input_size)
            return _image_logits(self.net.score(self.image_path(batch), text), sizes[0])

    def warmup(self, batch_sizes: Sequence[int] = (1,), labels: Sequence[str] = ("a", "b")) -> None:
        """Run each batch size once at `input_size` (compiles / captures now, not on the first frame;
        the compiled post-processing serves every label count from then on)."""
        if self.input_size is None:
            raise ValueError("warmup needs input_size (the fixed frame size to compile for)")
        frame = np.zeros((*self.input_size, 3), np.uint8)
        for b in batch_sizes:
            self.predict_batch([frame] * b, list(labels), want_probs=[0])
