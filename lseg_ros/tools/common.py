"""Shared helpers of the offline tools: errors and exit codes, labels, model loading, progress."""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from lseg_ros.model.labels import parse_labels
from lseg_ros.model.variants import NAMES, named_config as variant_config

log = logging.getLogger(__name__)

EXIT_USAGE = 2


class ToolError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def cli(func: Callable[[argparse.Namespace], int | None]) -> Callable:
    """Wrap a tool body: set up logging, turn expected errors into one line on stderr + exit 2."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            return int(func(args) or 0)
        except (ToolError, FileNotFoundError, ValueError, OSError) as e:
            if getattr(args, "verbose", False):
                log.exception("failed")
            print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def add_common_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")
    if model:
        g = p.add_argument_group("model")
        g.add_argument("-w", "--weights", type=Path,
                       help="released LSeg checkpoint (.ckpt) or the project's own file (.safetensors)")
        g.add_argument("--config", default=None,
                       help=f"named config ({', '.join(NAMES)}) to build with random "
                            "weights when no --weights is given (tests, smoke runs)")
        g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
        g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                       help="inference precision (default fp32, exact). fp16 (CUDA only) and bf16 (CUDA and "
                            "CPU) convert the image path's weights once and run in that precision: faster, masks "
                            "agree with fp32 on about 99%% of pixels (docs/performance.md)")
        g.add_argument("--spatial-block", default=None, choices=("bottleneck", "depthwise"),
                       help="spatial-regularisation head of a released checkpoint (docs/model.md §1.5)")
        g.add_argument("--block-depth", type=int, default=0, help="depth of that head (default 0)")
        g.add_argument("--activation", default="lrelu", choices=("relu", "lrelu", "tanh"))


def parse_label_args(values: Sequence[str] | None, labels_file: Path | None) -> list[str]:
    """Labels from ``--labels`` (comma-separated, repeatable; stripped as the reference demo does,
    docs/model.md §3.1) and/or a YAML/txt file, checked by the model library's rule
    (lseg_ros.model.labels): duplicates (case-insensitive) would make two ids for one name."""
    from lseg_ros.tools.data import DataError, read_class_names

    labels: list[str] = []
    for v in values or ():
        labels += [s.strip() for s in v.split(",") if s.strip()]
    if labels_file is not None:
        try:
            labels += read_class_names(labels_file)
        except DataError as e:
            raise ToolError(str(e)) from None
    if not labels:
        raise ToolError("no labels: give --labels 'a, b, other' or --labels-file FILE")
    try:
        parse_labels(labels)
    except ValueError as e:
        raise ToolError(str(e)) from None
    return labels


def net_settings(weights: Path | None = None, config: str | None = None, device: str = "cpu",
                 spatial_block=None, block_depth: int = 0, activation: str = "lrelu"):
    """The tools' model options as the model library's NetSettings (model/build.py, shared with the node)."""
    from lseg_ros.model.build import NetSettings

    if weights is None and config is None:
        raise ToolError("give --weights FILE (or --config NAME for an untrained network)")
    if weights is not None and not Path(weights).is_file():
        raise ToolError(f"{weights}: weights file not found (lseg-fetch downloads released ones)")
    return NetSettings(weights=str(weights or ""), model=config or "vitl16", spatial_block=spatial_block,
                       block_depth=block_depth, activation=activation, device=device)


def load_net(weights: Path | None = None, config: str | None = None, device: str = "cpu",
             spatial_block=None, block_depth: int = 0, activation: str = "lrelu"):
    """The network from a released/own checkpoint (format recognised by content), or a named config
    with random weights, through the model library's builder."""
    from lseg_ros.model.build import BuildError, load_net as build_net

    settings = net_settings(weights, config, device, spatial_block, block_depth, activation)
    try:
        return build_net(settings, device, log)
    except BuildError as e:
        raise ToolError(str(e)) from None


def build_predictor(args: argparse.Namespace, device: str, max_side: int | None = None):
    """A Predictor for the tools' model options (-w/--config, --precision, ...), built as the node builds its own."""
    from lseg_ros.model.build import BuildError, build_predictor as build
    from lseg_ros.model.options import PredictorOptions

    settings = net_settings(args.weights, args.config, device, args.spatial_block, args.block_depth, args.activation)
    try:
        return build(settings, PredictorOptions(precision=args.precision, max_side=max_side), logger=log)
    except BuildError as e:
        raise ToolError(str(e)) from None


def named_config(name: str):
    try:
        return variant_config(name)
    except ValueError as e:
        raise ToolError(str(e)) from None


def progress(iterable=None, total=None, desc=None, unit="it", enabled: bool = True):
    """A tqdm bar (rate and time left) on stderr; off when stderr is not a terminal or not ``enabled``
    (the other processes of a torchrun job: rank 0 shows it)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=None if enabled else True, file=sys.stderr)
