"""Predictor: images as robots see them (HxWx3 uint8) -> class mask, confidence, scores.

Single pass (default, for live use), for one image or a batch of cameras in ONE forward: frames
are uploaded as uint8 and, on the device, normalised with the weights' mean/std, shrunk so the long
side is at most `max_side` (aspect kept; also to fit `input_size`), padded bottom/right with the
value that is black after normalisation (as the reference pads, §4) to one common size (multiple of
32, or `input_size`), run; each image's logits are cropped and resized back to its own resolution,
and the results are computed from the logits on the device (postprocess.py).

Precision (`precision="auto"`): fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; the image
path's weights are converted once (fastpath.py); the text tower and the label step stay float32.

`protocol="reference"` runs the reference evaluation (§4, `LSeg_MultiEvalModule`, reference.py).
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

from .devices import DTYPES, Precision, resolve_device, resolve_precision
from .fastpath import ImagePath, Uploader, convert_image_path, image_dtype, image_modules
from .lseg import LSegNet
from .onnx_runtime import OnnxImagePath, OnnxOptions
from .postprocess import WantProbs, download, summarize, summarize_upsampled
from .cpu_attention import restore_attention
from .prepack import packed_dtype, prepack_supported, unpack_linears
from .reference import REFERENCE_SCALES, reference_logits
from .text import LabelSet, encode_label_set

log = logging.getLogger(__name__)

__all__ = ["Prediction", "Predictor", "check_image", "normalize_image", "REFERENCE_SCALES"]


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


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")


def _check_order(channel_order: str) -> None:
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")


def _normalize(x: torch.Tensor, mean, std, channel_order: str) -> torch.Tensor:
    """(H, W, 3) uint8 tensor -> (1, 3, H, W) float32 ``(x/255 - mean) / std`` (same device)."""
    x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if channel_order == "bgr":
        x = x.flip(1)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalize_image(image: np.ndarray, mean, std, device=None, channel_order: str = "rgb") -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32 ``(x/255 - mean) / std`` on ``device``.

    ``mean``/``std``: 3 numbers, or tensors broadcastable to (1, 3, 1, 1). The one place
    where images are normalised (the Predictor and the training tools use it)."""
    check_image(image)
    _check_order(channel_order)
    return _normalize(torch.from_numpy(np.ascontiguousarray(image)).to(device), mean, std, channel_order)


def _ceil32(v: int) -> int:
    return math.ceil(v / 32) * 32


class Predictor:
    """Wraps an `LSegNet` with device, precision, fast paths, label cache and pre/post-processing.

    Args:
        precision: "auto" (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), or explicit.
            fp16/bf16 convert the net's image path in place (the net then belongs to this precision).
        max_side: shrink frames whose long side is larger (results still at input resolution).
        input_size: (H, W), multiples of 32: every batch is padded to exactly this size (frames that
            do not fit are shrunk to fit), so compiled code and CUDA graphs see one shape.
        compile: torch.compile the image path (frame -> pixel embeddings); warm up with `warmup()`.
        cuda_graphs: replay the image path as a CUDA graph per input shape (CUDA only).
        channels_last: NHWC memory format for the image path's convolutions; None (default): on the CPU
            (oneDNN's convolutions then need no reorders: the decoder's convolutions 1.3-2.5x faster).
        prepack: the image path's linear layers prepacked for oneDNN, GELU fused (prepack.py; exact);
            None (default): on the CPU when this build supports it and `compile` is off (inductor's
            freezing packs its own). The net then belongs to this Predictor's precision.
        cpu_attention: the ViT's attention through the bf16 kernel for avx512_bf16 CPUs (cpu_attention.py,
            compiled on first use); None (default): in bf16 on such a CPU without `compile`.
        Today's plain eager path (the benchmarks' baseline): precision="fp32", channels_last=False,
        prepack=False (cpu_attention only acts in bf16).
        profile: record per-stage seconds of the last call in `stage_times` (adds device syncs).
        onnx: run the image path in ONNX Runtime from an exported file (onnx_runtime.py) instead of torch;
            the label step and post-processing stay the same. The file must come from this net's
            architecture and weights; its input size is the Predictor's (`input_size` may repeat it).
            The net's torch image weights are then emptied (unless `onnx.keep_torch_weights`).
    """

    def __init__(self, net: LSegNet, device: Union[str, torch.device] = "cpu", precision: Precision = "auto",
                 max_side: Optional[int] = None, cache_size: int = 16, *, input_size: Optional[Tuple[int, int]] = None,
                 compile: bool = False, cuda_graphs: bool = False, channels_last: Optional[bool] = None,
                 prepack: Optional[bool] = None, cpu_attention: Optional[bool] = None,
                 profile: bool = False, onnx: Optional[OnnxOptions] = None) -> None:
        self.device = resolve_device(device)
        onnx_path = None
        if onnx is not None:  # the torch path's options below become no-ops; the label step runs in fp32
            if compile or cuda_graphs or prepack or cpu_attention or precision not in ("auto", "fp32"):
                raise ValueError("with onnx the image path runs in ONNX Runtime: precision, compile, cuda_graphs, "
                                 "prepack and cpu_attention are torch settings (the weights' dtype is chosen at export)")
            onnx_path = OnnxImagePath.for_net(onnx, net, self.device, input_size)
            precision, input_size, channels_last, prepack, cpu_attention = "fp32", onnx_path.input_size, False, False, False
        self.precision = resolve_precision(precision, self.device)
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
            if min(input_size) < 32 or input_size[0] % 32 or input_size[1] % 32:
                raise ValueError(f"input_size must be (H, W), multiples of 32, got {input_size}")
        self.max_side = max_side
        self.input_size = input_size
        self.dtype = DTYPES[self.precision]
        cpu = self.device.type == "cpu"
        self.channels_last = cpu if channels_last is None else bool(channels_last)
        if prepack and (not cpu or compile):
            raise ValueError("prepack is for the eager CPU path (not with compile, which packs its own weights, "
                             f"nor on {self.device})")
        if prepack and not prepack_supported(self.dtype):
            raise ValueError(f"prepack: this torch build or CPU has no oneDNN packed linear for {self.dtype}")
        self.prepacked = (cpu and not compile and prepack_supported(self.dtype)) if prepack is None else bool(prepack)
        bf16_eager_cpu = cpu and not compile and self.dtype == torch.bfloat16
        if cpu_attention and not bf16_eager_cpu:
            raise ValueError("cpu_attention is for bf16 on the CPU without compile")
        want_attention = bf16_eager_cpu if cpu_attention is None else bool(cpu_attention)
        if self.dtype == torch.float32 and image_dtype(net) != torch.float32:
            raise ValueError(f"this LSegNet's image weights were converted to {image_dtype(net)} by another "
                             "Predictor; build or load the net again for fp32")
        if packed_dtype(image_modules(net)) not in (None, self.dtype) or not self.prepacked:
            unpack_linears(image_modules(net))  # packed by another Predictor for another precision or device
        if not want_attention:
            restore_attention(image_modules(net))
        self.net = net.to(self.device).eval()
        convert_image_path(self.net, self.dtype)
        self.image_path = onnx_path or ImagePath(self.net, self.device, self.dtype, channels_last=self.channels_last,
                                                 compile=compile, cuda_graphs=cuda_graphs, prepack=self.prepacked,
                                                 cpu_attention=want_attention)
        self.backend = onnx_path.description if onnx_path else "torch"
        self.cpu_attention = getattr(self.image_path, "kernel_attention", 0) > 0  # False where the kernel is unavailable
        self.uploader = Uploader(self.device)
        self.profile = profile
        self.stage_times: Dict[str, float] = {}
        self._cache: "OrderedDict[tuple, LabelSet]" = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # label cache
        self._run_lock = threading.Lock()  # static buffers (pinned upload, CUDA graphs)
        self._mean = torch.tensor(net.config.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(net.config.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

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
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        log.debug("encoded %d labels (version %d)", len(label_set), label_set.version)
        return label_set

    def _label_set(self, labels: Union[LabelSet, Sequence[str]]) -> LabelSet:
        return labels if isinstance(labels, LabelSet) else self.encode_labels(labels)

    # ---- images ------------------------------------------------------------------
    def to_tensor(self, image: np.ndarray, channel_order: str = "rgb") -> torch.Tensor:
        """HxWx3 uint8 -> (1, 3, H, W) float32 normalised, on the device."""
        return normalize_image(image, self._mean, self._std, self.device, channel_order)

    def _pad(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Pad bottom/right to (h, w) with -mean/std, i.e. black (§4, pad_image)."""
        _, c, xh, xw = x.shape
        if (xh, xw) == (h, w):
            return x
        out = (-self._mean / self._std).to(x.dtype).expand(x.shape[0], c, h, w).clone()
        out[:, :, :xh, :xw] = x
        return out

    def _fit(self, h: int, w: int) -> Tuple[int, int]:
        """The size a (h, w) frame is run at: shrunk for max_side and to fit input_size, never grown."""
        s = 1.0
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
        if self.input_size is not None:
            s = min(s, self.input_size[0] / h, self.input_size[1] / w)
        if s >= 1.0:
            return h, w
        return max(1, min(round(h * s), self.input_size[0] if self.input_size else h)), \
            max(1, min(round(w * s), self.input_size[1] if self.input_size else w))

    def _prepare(self, images: Sequence[np.ndarray], orders: Sequence[str]) -> Tuple[torch.Tensor, List[Tuple]]:
        """Frames -> one padded (B, 3, PH, PW) batch in the compute dtype, and each frame's
        (h, w, rh, rw): input size and the size it was run at."""
        frames = self.uploader(images)
        sizes, run = [], []
        for t, order in zip(frames, orders):
            x = _normalize(t, self._mean, self._std, order)
            h, w = x.shape[2:]
            rh, rw = self._fit(h, w)
            if (rh, rw) != (h, w):
                x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
            sizes.append((h, w, rh, rw))
            run.append(x)
        ph, pw = self.input_size or (_ceil32(max(s[2] for s in sizes)), _ceil32(max(s[3] for s in sizes)))
        batch = (-self._mean / self._std).to(self.dtype).expand(len(run), 3, ph, pw).clone()
        for i, x in enumerate(run):
            batch[i, :, :x.shape[2], :x.shape[3]] = x
        return batch, sizes

    def _tick(self, name: str, t0: float) -> float:
        if self.profile:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t = time.perf_counter()
            self.stage_times[name] = t - t0
            return t
        return t0

    @staticmethod
    def _image_logits(logits: torch.Tensor, size: Tuple[int, int, int, int]) -> torch.Tensor:
        """(1, N, PH, PW) logits of a padded frame -> (N, h, w) at the frame's own resolution."""
        h, w, rh, rw = size
        out = logits[:, :, :rh, :rw]
        if (rh, rw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[0]

    @staticmethod
    def _features(emb: torch.Tensor, size: Tuple[int, int, int, int], stride: int) -> torch.Tensor:
        """(D, PH/2, PW/2) embeddings -> (D, ceil(h/s), ceil(w/s)) area-resized, re-normalised, float16."""
        h, w, rh, rw = size
        f = emb[:, :math.ceil(rh / 2), :math.ceil(rw / 2)]
        target = (math.ceil(h / stride), math.ceil(w / stride))
        if tuple(f.shape[1:]) != target:
            f = F.adaptive_avg_pool2d(f.unsqueeze(0), target)[0]
        return F.normalize(f, dim=0).half()

    # ---- inference ---------------------------------------------------------------
    def predict_batch(self, images: Sequence[np.ndarray], labels: Union[LabelSet, Sequence[str]],
                      channel_orders: Union[str, Sequence[str]] = "rgb", want_probs: WantProbs = False,
                      features_stride: Optional[int] = None) -> List[Prediction]:
        """Segment several frames (any sizes) in ONE forward; one `Prediction` per frame, each at
        its own input's resolution. `want_probs`: True (all labels) or label indices (heatmaps)."""
        if isinstance(images, np.ndarray) or not len(images):
            raise TypeError("images must be a non-empty list of HxWx3 uint8 arrays")
        for im in images:
            check_image(im)
        orders = [channel_orders] * len(images) if isinstance(channel_orders, str) else list(channel_orders)
        if len(orders) != len(images):
            raise ValueError(f"{len(orders)} channel orders for {len(images)} images")
        for o in orders:
            _check_order(o)
        if features_stride is not None and (not isinstance(features_stride, int) or features_stride < 1):
            raise ValueError(f"features_stride must be a positive int, got {features_stride!r}")
        labels = self._label_set(labels)
        text = labels.embeddings.to(self.device)
        with self._run_lock, torch.inference_mode():
            t = time.perf_counter()
            batch, sizes = self._prepare(images, orders)
            t = self._tick("upload", t)
            emb = self.image_path(batch)
            t = self._tick("forward", t)
            results, feats = [], []
            for i, size in enumerate(sizes):
                if self.device.type == "cpu" and size[:2] == size[2:]:  # banded: no full-size logits
                    low = self.net.score(emb[i:i + 1], text, upsample=False)[0]
                    results.append(summarize_upsampled(low, size[:2], want_probs))
                else:
                    logits = self._image_logits(self.net.score(emb[i:i + 1], text), size)
                    results.append(summarize(logits, want_probs))
                if features_stride is not None:
                    feats.append(self._features(emb[i], size, features_stride))
            t = self._tick("post", t)
            host = download(results, want_all_probs=want_probs is True)
            feats = [f.cpu().numpy() for f in feats]
            self._tick("download", t)
        return [Prediction(mask=r.mask, confidence=r.confidence, probs=r.probs, pixel_fraction=r.pixel_fraction,
                           mean_confidence=r.mean_confidence, max_confidence=r.max_confidence, labels=labels,
                           features=feats[i] if feats else None) for i, r in enumerate(host)]

    def predict(self, image: np.ndarray, labels: Union[LabelSet, Sequence[str]], channel_order: str = "rgb",
                want_probs: WantProbs = False, protocol: Literal["single", "reference"] = "single",
                features_stride: Optional[int] = None, **reference_kw) -> Prediction:
        """Segment one image (a batch of one). `labels` is a LabelSet (or strings, encoded via the cache)."""
        if protocol == "single" and not reference_kw:
            return self.predict_batch([image], labels, channel_order, want_probs, features_stride)[0]
        if features_stride is not None:
            raise ValueError("features_stride is only available with protocol='single'")
        labels = self._label_set(labels)
        logits = self.logits(image, labels, channel_order, protocol, **reference_kw)
        with torch.inference_mode():
            r = download([summarize(logits, want_probs)], want_all_probs=want_probs is True)[0]
        return Prediction(r.mask, r.confidence, r.probs, r.pixel_fraction, r.mean_confidence, r.max_confidence, labels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float32, H, W multiples of 32 -> (B, N, H, W) float32 logits."""
        with torch.inference_mode():
            return self.net.score(self.image_path(x.to(self.dtype)), text)

    def logits(self, image: np.ndarray, labels: LabelSet, channel_order: str = "rgb",
               protocol: Literal["single", "reference"] = "single", **reference_kw) -> torch.Tensor:
        """(N, H, W) float32 logits at input resolution (reference: mean over scales and flips)."""
        check_image(image)
        _check_order(channel_order)
        text = self._label_set(labels).embeddings.to(self.device)
        if protocol == "reference":
            x = self.to_tensor(image, channel_order)
            with self._run_lock:
                return reference_logits(self.forward, self._pad, x, text, **reference_kw)[0]
        if protocol != "single":
            raise ValueError(f"protocol must be 'single' or 'reference', got {protocol!r}")
        if reference_kw:
            raise TypeError(f"unexpected options for protocol='single': {sorted(reference_kw)}")
        with self._run_lock, torch.inference_mode():
            batch, sizes = self._prepare([image], [channel_order])
            return self._image_logits(self.net.score(self.image_path(batch), text), sizes[0])

    def warmup(self, batch_sizes: Sequence[int] = (1,), labels: Sequence[str] = ("a", "b")) -> None:
        """Run each batch size once at `input_size` (compiles / captures now, not on the first frame)."""
        if self.input_size is None:
            raise ValueError("warmup needs input_size (the fixed frame size to compile for)")
        frame = np.zeros((*self.input_size, 3), np.uint8)
        for b in batch_sizes:
            self.predict_batch([frame] * b, list(labels))
