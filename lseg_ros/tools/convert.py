"""``lseg-convert``: a released Lightning checkpoint -> the project's safetensors format (docs/model.md §2.3).

The mapping (prefix renames, dropped CLIP visual tower, fp16 -> fp32, strict key check) is the
model library's ``convert_checkpoint``; this tool adds the command line and a reload check.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable

from lseg_ros.tools.common import ToolError, cli

log = logging.getLogger(__name__)


def convert(src: Path, dst: Path, spatial_block=None, block_depth: int = 0, activation: str = "lrelu",
            overwrite: bool = False, config=None) -> str:
    """``config`` overrides the architecture read from the layout (tests use tiny models)."""
    from lseg_ros.model import CheckpointError, LSegNet, convert_checkpoint

    if not Path(src).is_file():
        raise ToolError(f"{src}: no such file")
    if Path(dst).exists() and not overwrite:
        raise ToolError(f"{dst}: exists already (use --overwrite)")
    try:
        convert_checkpoint(src, dst, spatial_block=spatial_block, block_depth=block_depth, activation=activation,
                           config=config)
        net = LSegNet.from_checkpoint(dst)  # reload: the written file is whole and self-describing
    except CheckpointError as e:
        raise ToolError(str(e)) from None
    n = sum(p.numel() for p in net.parameters())
    return f"wrote {dst}: {net.config.backbone} backbone, {n / 1e6:.1f}M parameters"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-convert",
        description="Convert a released LSeg checkpoint (.ckpt) to the project's safetensors format.",
        epilog="example:\n  lseg-convert demo_e200.ckpt demo_e200.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="released checkpoint (demo_e200.ckpt, fss_l16.ckpt, ...)")
    p.add_argument("dst", type=Path, help="output .safetensors file")
    p.add_argument("--spatial-block", choices=("bottleneck", "depthwise"), default=None,
                   help="spatial-regularisation head the file was trained with (docs/model.md §1.5; demo: none)")
    p.add_argument("--block-depth", type=int, default=0)
    p.add_argument("--activation", choices=("relu", "lrelu", "tanh"), default="lrelu")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)  # tiny layouts in tests
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def _run(args) -> int:
    from lseg_ros.tools.common import named_config

    config = named_config(args.config) if args.config else None
    print(convert(args.src, args.dst, args.spatial_block, args.block_depth, args.activation, args.overwrite,
                  config))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
