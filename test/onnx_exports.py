"""The ONNX exports the onnx tests share (made once per pytest session by conftest's `onnx_exports`).

- vit: a tiny ViT written as a synthetic released-layout checkpoint, exported by the `lseg-export`
  command (fixed 96x128, batch 1, fp32); the same weights as the project's safetensors (`vit_weights`),
  which the node loads.
- resnet: a tiny ResNet exported by the library with dynamic batch, height and width (fp32).
- vit_uint8_fp16: the tiny ViT again, uint8 frames in, fp16 weights, batch 2 at 64x96.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Exports:
    vit_weights: Path  # own safetensors of the tiny ViT
    vit_ckpt: Path  # the same weights in the released Lightning layout
    vit: Path  # model.onnx exported from vit_ckpt by lseg-export
    cli_output: str
    resnet: Path
    vit_uint8_fp16: Path
    seconds: float


def tiny_net(name: str, seed: int = 0):
    import torch

    from lseg_ros.model import LSegConfig, LSegNet

    torch.manual_seed(seed)
    return LSegNet.from_config(getattr(LSegConfig, name)())


def make_exports(root: Path) -> Exports:
    from ros_harness import photo
    from synthetic_ckpt import released_from_net

    from lseg_ros.model import save_own
    from lseg_ros.model.export import ExportOptions, export_image_path

    t0 = time.perf_counter()
    vit = tiny_net("tiny_vit")
    weights = Path(save_own(vit, root / "tiny_vit.safetensors"))
    ckpt = released_from_net(vit, root / "tiny_vit_released.ckpt")
    out = subprocess.run([sys.executable, "-m", "lseg_ros.tools.export", str(ckpt), "-o", str(root / "vit"),
                          "--size", "96x128", "--config", "tiny_vit"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    image = photo(640, 480)
    resnet = export_image_path(tiny_net("tiny_resnet"), root / "resnet", ExportOptions(size=(64, 96), dynamic=True),
                               image, source="tiny_resnet (random)")
    low = export_image_path(vit, root / "vit_uint8_fp16", ExportOptions(size=(64, 96), batch=2, weights_dtype="fp16",
                                                                          input_kind="uint8"), image)
    return Exports(weights, ckpt, root / "vit" / "model.onnx", out.stdout, Path(resnet.onnx_path),
                   Path(low.onnx_path), time.perf_counter() - t0)
