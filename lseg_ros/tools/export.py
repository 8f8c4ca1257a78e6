"""``lseg-export``: the image path of a checkpoint as ONNX, for ONNX Runtime / TensorRT (docs/deployment.md).

    lseg-export demo_e200.ckpt -o export/vitl16_480x640            # model.onnx + model.json
    lseg-export fss_rn101.ckpt -o export/rn101 --size 480x640 --batch 2 --dtype fp16

Writes the text-independent part (frame -> per-pixel embeddings at half resolution); the label step
stays in lseg_ros, so a label change never rebuilds an engine. Before anything is kept, ONNX Runtime's
CPU provider runs the file on a real photo against the PyTorch fp32 path: the cosine similarity of the
embeddings and the agreement of the masks are printed, and an export below the tolerance is refused.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from typing import Iterable

from lseg_ros.tools.common import ToolError, cli


def _size(text: str):
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not m or int(m.group(1)) % 32 or int(m.group(2)) % 32 or min(int(m.group(1)), int(m.group(2))) < 32:
        raise argparse.ArgumentTypeError(f"must be HxW, multiples of 32 (e.g. 480x640); got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _need_exporter() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ToolError(f"lseg-export needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime "
                        "(or pip install .[onnx] from the repository)")


def _photo(path: Path | None):
    """The check image, RGB: `path`, or matplotlib's sample photo (a portrait, shipped with matplotlib)."""
    import cv2

    if path is None:
        from matplotlib import cbook
        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ToolError(f"{path}: not a readable image (--check-image)")
    return image[:, :, ::-1].copy(), path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-export", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="\n".join(__doc__.split("\n\n")[1].splitlines()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="released LSeg checkpoint (.ckpt) or the project's .safetensors")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--name", default="model", help="file names: NAME.onnx and NAME.json (default model)")
    p.add_argument("--size", type=_size, default=(480, 640), help="input HxW, multiples of 32 (default 480x640)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the graph (default 1; one per camera)")
    p.add_argument("--dynamic", action="store_true", help="batch, height and width free (--size is the example)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="weights in the graph (default fp32)")
    p.add_argument("--input", choices=("normalized", "uint8"), default="normalized",
                   help="normalized: (B,3,H,W) float32 as the lseg_ros node feeds it (default); uint8: (B,H,W,3) "
                        "RGB frames, normalised in the graph (for other runtimes)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--check-image", type=Path, default=None,
                   help="photo for the write-time check (default: matplotlib's sample portrait)")
    p.add_argument("--min-cosine", type=float, default=None, help="refuse below this mean cosine "
                   "similarity of the embeddings (default 0.999 fp32, 0.99 fp16)")
    p.add_argument("--min-agreement", type=float, default=None, help="refuse below this share of equal mask "
                   "pixels (default 0.999 fp32, 0.99 fp16)")
    p.add_argument("--spatial-block", choices=("bottleneck", "depthwise"), default=None,
                   help="spatial head of a released checkpoint (not in the graph; needed to load the file)")
    p.add_argument("--block-depth", type=int, default=0)
    p.add_argument("--activation", choices=("relu", "lrelu", "tanh"), default="lrelu")
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)  # tiny released layouts in tests
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def _run(args) -> int:
    from lseg_ros.model import CheckpointError, LSegNet
    from lseg_ros.model.export import ExportOptions, export_image_path
    from lseg_ros.tools.common import named_config

    if not args.weights.is_file():
        raise ToolError(f"{args.weights}: weights file not found")
    _need_exporter()
    image, image_path = _photo(args.check_image)
    options = ExportOptions(size=args.size, batch=args.batch, dynamic=args.dynamic, weights_dtype=args.dtype,
                            input_kind=args.input, opset=args.opset, min_cosine=args.min_cosine,
                            min_agreement=args.min_agreement)
    try:
        net = LSegNet.from_checkpoint(args.weights, spatial_block=args.spatial_block, block_depth=args.block_depth,
                                      activation=args.activation,
                                      config=named_config(args.config) if args.config else None)
    except CheckpointError as e:
        raise ToolError(str(e)) from None
    r = export_image_path(net, args.out, options, image, name=args.name, source=args.weights.name)
    c = r.check
    print(f"wrote {r.onnx_path} ({Path(r.onnx_path).stat().st_size / 1e6:.1f} MB, {net.config.backbone}, "
          f"{args.dtype} weights, input {r.info.input_shape()}) and {r.sidecar_path} in {r.export_seconds:.1f} s")
    print(f"check on {image_path.name} ({c['labels']} labels, inputs {c['inputs']}, onnxruntime CPU vs PyTorch fp32): "
          f"cosine similarity mean {c['cosine_mean']:.6f} min {c['cosine_min']:.6f}, mask agreement "
          f"{c['mask_agreement']:.5f}, max |diff| {c['max_abs_diff']:.2e}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
