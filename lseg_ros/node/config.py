"""The node's settings as one typed, frozen object, built from the parameters and validated once.

`params.PARAMS` is the one table of names, defaults, descriptions and checks; `NodeConfig` gives each
parameter its type and an attribute. The node replaces its NodeConfig when a parameter changes
(`NodeConfig.changed`), never mutates it, so everything that read one (a batch, a camera refresh)
saw one consistent set. Cameras, depth input, outputs, diagnostics and the worker receive it.
No rclpy here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional, Tuple

from . import params as P


@dataclass(frozen=True)
class NodeConfig:
    # model (read at configure)
    weights: str
    model: str
    spatial_block: str
    block_depth: int
    activation: str
    device: str
    precision: str
    num_threads: int
    backend: str
    onnx_model: str
    providers: Tuple[str, ...]
    trt_engine_cache: str
    fast_path: str
    input_size: str
    max_side: int
    autostart: bool
    image_topics: Tuple[str, ...]
    # labels and outputs
    labels: Tuple[str, ...]
    min_confidence: float
    palette: str
    overlay_alpha: float
    overlay_legend: bool
    depth_topics: Tuple[str, ...]
    camera_info_topics: Tuple[str, ...]
    depth_tolerance: float
    points_decimation: int
    points_max_range: float
    points_drop_unlabeled: bool
    features_stride: int
    heatmap_labels: Tuple[str, ...]
    # input
    input_transport: str
    input_reliability: str
    input_depth: int
    max_frame_age: float
    max_image_pixels: int
    # outputs
    output_depth: int
    diagnostics_period: float

    @staticmethod
    def coerce(name: str, value: Any) -> Any:
        """A parameter value as this object holds it: string arrays as tuples, integers as floats for
        float parameters (ROS gives `max_frame_age: 0` as an integer)."""
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            return tuple(str(v) for v in value)
        if isinstance(P.BY_NAME[name].default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeConfig":
        """Every parameter's value (missing ones: their defaults) -> NodeConfig; ValueError listing
        every invalid value with its reason."""
        merged = {p.name: values.get(p.name, p.default) for p in P.PARAMS}
        merged = {k: cls.coerce(k, v) for k, v in merged.items()}
        problems = [f"{n}: {r}" for n, v in merged.items() if (r := P.validate(n, list(v) if isinstance(v, tuple) else v))]
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        return cls(**merged)

    def changed(self, **changes: Any) -> "NodeConfig":
        """A new NodeConfig with `changes` (coerced; the caller validated them one by one)."""
        return replace(self, **{k: self.coerce(k, v) for k, v in changes.items()})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def input_hw(self) -> Optional[Tuple[int, int]]:
        """`input_size` parsed: (H, W) or None."""
        return P.parse_input_size(self.input_size)

    @property
    def max_side_or_none(self) -> Optional[int]:
        return self.max_side or None

    @property
    def untrained(self) -> bool:
        return not self.weights

