"""lseg_node's parameters: one table (name, default, description, validation, read-only).

ROS-free on purpose: the node declares exactly these, config/lseg.yaml sets a subset of them and the
tests compare the two without starting ROS. `validate(name, value)` returns None when the value is
acceptable, otherwise the reason shown to the user (ros2 param set prints it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..imaging import PALETTES
from ..model.labels import label_problem
from ..model.variants import NAMES as MODELS

DEFAULT_LABELS = ["floor", "wall", "person", "other"]
# More labels cost text-encoding time at every switch (about 60 ms per label on a 2-core CPU) and
# memory per frame; 1024 keeps a switch under a minute there and the mask in mono16.
MAX_LABELS = 1024
# Live frames are shrunk to this long side for the network by default (Predictor.max_side): the work
# and memory of a frame grow with its pixels (ViT attention faster still), so one legal 4096x4096 frame
# would take minutes on a CPU. 1280 keeps 720p at full resolution; outputs stay at the input's size.
DEFAULT_MAX_SIDE = 1280


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # a python value; list[str] parameters may default to [] (declared STRING_ARRAY)
    description: str
    check: Optional[Callable[[Any], Optional[str]]] = None
    at_configure: bool = False  # read at configure (model, device, cameras): changed only while unconfigured
    constraints: str = ""


def _choice(*options: str) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}; got {v!r}"


def _range(lo: Optional[float] = None, hi: Optional[float] = None) -> Callable[[Any], Optional[str]]:
    def check(v):
        if lo is not None and v < lo:
            return f"must be >= {lo}; got {v}"
        if hi is not None and v > hi:
            return f"must be <= {hi}; got {v}"
        return None
    return check


def _device(v: str) -> Optional[str]:
    if v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v or ""):
        return None
    return f"must be auto, cpu, cuda or cuda:N; got {v!r}"


def _max_side(v: int) -> Optional[str]:
    return None if v == 0 or v >= 32 else f"must be 0 (full resolution) or >= 32; got {v}"


def parse_input_size(v: str) -> Optional[Tuple[int, int]]:
    """'480x640' -> (480, 640); '' -> None. Raises ValueError naming the rule."""
    if not v.strip():
        return None
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", v)
    if not m:
        raise ValueError(f"must be 'HxW' (e.g. 480x640) or ''; got {v!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if min(h, w) < 32 or h % 32 or w % 32:
        raise ValueError(f"height and width must be multiples of 32 (>= 32); got {v!r}")
    return h, w


def _input_size(v: str) -> Optional[str]:
    try:
        parse_input_size(v)
    except ValueError as e:
        return str(e)
    return None


def _labels(v: List[str]) -> Optional[str]:
    return label_problem(v, MAX_LABELS)  # the model library's rules (torch-free), plus the node's count limit


def _heatmap_labels(v: List[str]) -> Optional[str]:
    names = [s.strip() for s in v if s.strip()]
    if len({n.casefold() for n in names}) != len(names):
        return f"duplicate names in {list(v)}"
    return None


def _image_topics(v: List[str]) -> Optional[str]:
    topics = [str(t).strip() for t in v]
    if not topics:
        return "give at least one image topic (the default is ['image'])"
    for t in topics:
        if not re.fullmatch(r"~?/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", t):
            return f"{t!r} is not a valid ROS topic name"
    if len(set(topics)) != len(topics):
        return f"duplicate topics in {topics}"
    return None


def _optional_topics(v: List[str]) -> Optional[str]:
    return _image_topics(v) if list(v) else None


def _providers(v: List[str]) -> Optional[str]:
    """Structure only: which providers exist is onnxruntime's to say, at configure."""
    names = [str(p).strip().lower() for p in v]
    if any(not n for n in names):
        return f"empty provider name in {list(v)}"
    if len(set(names)) != len(names):
        return f"duplicate providers in {list(v)}"
    return None


PARAMS: Tuple[Param, ...] = (
    # --- model (read at start; change and restart) ---
    Param("weights", "", "Path to the weights: a released LSeg Lightning checkpoint (demo_e200.ckpt, "
          "fss_l16.ckpt, fss_rn101.ckpt, ...) or the project's own .safetensors file. '' = no weights: "
          "an UNTRAINED network built from `model` (meaningless output; for tests and plumbing only).",
          at_configure=True),
    Param("model", "vitl16", "Architecture used when `weights` is '' (a weights file carries its own): "
          "vitl16, rn101, or the small test variants tiny_vit, tiny_resnet.", _choice(*MODELS), True),
    Param("spatial_block", "", "Spatial-regularisation head of a released checkpoint ('', bottleneck, "
          "depthwise); not stored in released files, so it must be given for such checkpoints.",
          _choice("", "bottleneck", "depthwise"), True),
    Param("block_depth", 0, "Depth of the spatial-regularisation head (released files: see its model card).",
          _range(0, 16), True),
    Param("activation", "lrelu", "Activation of the spatial-regularisation head: relu, lrelu, tanh.",
          _choice("relu", "lrelu", "tanh"), True),
    Param("device", "auto", "auto (cuda when available, else cpu with a warning), cpu, cuda, cuda:N. "
          "Asking for cuda where there is none is an error at start.", _device, True),
    Param("precision", "auto", "auto (CUDA: fp16; CPU: bf16 where the CPU has native bf16, else fp32), "
          "fp32, fp16 (CUDA only) or bf16.", _choice("auto", "fp32", "fp16", "bf16"), True),
    Param("num_threads", 0, "torch CPU threads for inference (0 = torch's default).", _range(0, 256), True),
    Param("fast_path", "auto", "auto: on CUDA, the image path replayed as CUDA graphs, and with `input_size` "
          "also torch.compile'd, all warmed up at configure; eager on the CPU. always: the same, and on the CPU "
          "torch.compile with frozen weights (exact fp32, ~1.1x, minutes of warm-up). eager: eager everywhere.",
          _choice("auto", "always", "eager"), True),
    Param("backend", "torch", "torch: the image path in PyTorch (precision and fast_path apply). onnxruntime: the "
          "image path from `onnx_model` in ONNX Runtime (`providers`); the label step, the outputs and everything "
          "else are the same code. `weights` is still needed (its text tower encodes the labels).",
          _choice("torch", "onnxruntime"), True),
    Param("onnx_model", "", "With backend onnxruntime: the model.onnx that lseg-export wrote from the same `weights` "
          "(its model.json beside it); its input size is the node's (input_size '' takes it).", None, True),
    Param("providers", [], "With backend onnxruntime: execution providers, best first: tensorrt, cuda, cpu (or "
          "onnxruntime's full names). [] = TensorRT, CUDA, CPU, those the installed onnxruntime offers; the one in "
          "use is logged and in /diagnostics (backend).", _providers, True),
    Param("trt_engine_cache", "~/.cache/lseg_ros/tensorrt", "With backend onnxruntime: directory where the TensorRT "
          "provider keeps the engines it builds (once per machine, model and input size; minutes on a Jetson). "
          "Created and checked writable at configure; '' = no cache.", None, True),
    Param("input_size", "", "'HxW' (multiples of 32, e.g. 480x640): every batch is shrunk to fit and padded to "
          "exactly this size, so compiled code and CUDA graphs see one shape and are built at configure. "
          "'' = each batch at its own size (graphs captured on the first frame of each size).", _input_size, True),
    Param("max_side", DEFAULT_MAX_SIDE, "Frames whose long side exceeds this are shrunk to it for the network "
          "(aspect kept; outputs stay at the input resolution). Bounds the time and memory one frame takes. "
          "0 = no bound (a 4096x4096 frame then takes minutes on a CPU).", _max_side),
    Param("autostart", True, "Configure and activate at start (lifecycle). false: the node waits in "
          "'unconfigured' for a lifecycle manager (ros2 lifecycle set /lseg_node configure).", None, True),
    Param("image_topics", ["image"], "Input image topics, one per camera; all cameras' newest frames go "
          "through one batched forward. Outputs of a camera go beside its image: 'front/image_raw' -> "
          "'front/lseg/mask'; the default 'image' gives 'lseg/mask'. Applied at configure.", _image_topics, True),
    # --- labels and outputs ---
    Param("labels", list(DEFAULT_LABELS), "Label set, class id = index. 'a|b' lists alternatives (their text "
          "embeddings are averaged; the display name is 'a'). Same effect as the set_labels service, which "
          "updates this parameter.", _labels),
    Param("min_confidence", 0.0, "Pixels whose winning probability is below this are 255 (mono16: 65535) "
          "in lseg/mask and uncoloured in lseg/overlay.", _range(0.0, 1.0)),
    Param("palette", "voc", f"Colours of the class ids in lseg/overlay and lseg/labels: {', '.join(PALETTES)}.",
          _choice(*PALETTES)),
    Param("overlay_alpha", 0.5, "Opacity of the mask colours in lseg/overlay.", _range(0.0, 1.0)),
    Param("overlay_legend", True, "Draw the label legend into lseg/overlay.", None),
    Param("depth_topics", [], "Depth images aligned to the colour images (16UC1 mm or 32FC1 m), one per camera in "
          "the order of image_topics; [] = no point clouds. With them the node publishes "
          "<camera>/lseg/points (PointCloud2: x, y, z, rgb, label, confidence) while subscribed.",
          _optional_topics, True),
    Param("camera_info_topics", [], "camera_info of each camera (order of image_topics); [] = the topic "
          "'camera_info' beside each image topic (/cam/color/image_raw -> /cam/color/camera_info). "
          "Pinhole K; distortion is assumed rectified, as aligned depth is.", _optional_topics, True),
    Param("depth_tolerance", 0.005, "A colour frame takes the depth frame of the same stamp, or the nearest one "
          "within this many seconds (0 = exact stamps only).", _range(0.0, 1.0)),
    Param("points_decimation", 1, "Every k-th pixel along rows and columns becomes a point (k=2: a quarter).",
          _range(1, 64)),
    Param("points_max_range", 10.0, "Depths beyond this (metres), 0 and NaN give no point.", _range(0.01)),
    Param("points_drop_unlabeled", False, "Leave out points below min_confidence (else they carry the "
          "unlabeled id).", None),
    Param("features_stride", 16, "Input pixels per cell of lseg/features (the per-pixel 512-d image embeddings, "
          "float16; computed only while subscribed): 16 gives 30x40 cells for 480x640; 2 is the network's "
          "own output resolution.", _range(1, 64)),
    Param("heatmap_labels", [], "Labels (display names) that get a 32FC1 probability map on "
          "lseg/heatmap/<name> (name lower-cased, non-alphanumerics replaced by '_').", _heatmap_labels),
    # --- input ---
    Param("input_transport", "raw", "raw: sensor_msgs/Image on `image`; compressed: "
          "sensor_msgs/CompressedImage on `<image>/compressed` (image_transport's naming).",
          _choice("raw", "compressed")),
    Param("input_reliability", "auto", "auto: reliable while every publisher of the input topic is reliable, "
          "best effort as soon as one is not (re-checked twice a second); reliable; best_effort.",
          _choice("auto", "reliable", "best_effort")),
    Param("input_depth", 1, "Keep-last depth of the input subscriptions (image ones: at least 2).", _range(1, 100)),
    Param("max_frame_age", 1.0, "Frames whose header stamp is older than this (seconds, node clock) when the "
          "worker takes them are dropped and counted. 0 disables the check (unsynchronised camera clocks).",
          _range(0.0)),
    Param("max_image_pixels", 4096 * 4096, "Larger input images are refused (logged, dropped).", _range(1)),
    # --- outputs ---
    Param("output_depth", 2, "Keep-last depth of the (reliable) output publishers.", _range(1, 100), True),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", _range(0.1, 60.0), True),
)

BY_NAME: Dict[str, Param] = {p.name: p for p in PARAMS}


def validate(name: str, value: Any) -> Optional[str]:
    """None if `value` is acceptable for parameter `name`, else the reason."""
    p = BY_NAME.get(name)
    if p is None:
        return None
    if isinstance(p.default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"must be a number; got {value!r}"  # float parameters are dynamically typed (take 0 as 0.0)
    return None if p.check is None else p.check(value)


def topic_token(name: str) -> str:
    """A label's display name as a ROS topic token: lower case, [a-z0-9_], not starting with a digit."""
    tok = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_") or "label"
    tok = re.sub(r"_+", "_", tok)
    return f"l_{tok}" if tok[0].isdigit() else tok
