"""Settings -> a network and a Predictor: the one way the node and the offline tools build them.

`NetSettings` says which network (a weights file, or a named variant with random weights) and where
(device, CPU threads); `PredictorOptions` (options.py) how it runs. `build_predictor` loads, places,
converts and warms up, with errors that name the file or setting at fault (`BuildError`, a ValueError).
What it reports goes to `logger` (anything with info/warning taking one string: a `logging.Logger`,
the node's ROS logger).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

log = logging.getLogger(__name__)


class BuildError(ValueError):
    """A network or Predictor that cannot be built; the message names the file or setting."""


@dataclass(frozen=True)
class NetSettings:
    """Which network, on which device.

    Args:
        weights: a released LSeg checkpoint or the project's own .safetensors; "" = no weights: an
            UNTRAINED network of variant `model` (for tests and plumbing).
        model: the variant built when there are no weights (variants.py); a weights file carries its own.
        spatial_block, block_depth, activation: the spatial-regularisation head of a released file
            (not stored in released files; docs/model.md §1.5).
        device: "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:N".
        num_threads: torch CPU threads (0 = torch's default).
    """

    weights: str = ""
    model: str = "vitl16"
    spatial_block: Optional[str] = None
    block_depth: int = 0
    activation: str = "lrelu"
    device: str = "auto"
    num_threads: int = 0

    @property
    def untrained(self) -> bool:
        return not self.weights


def resolve_device_name(device: str) -> Tuple[str, bool]:
    """(device to use, True when 'auto' fell back to the CPU). BuildError when CUDA is asked for and absent."""
    import torch

    if device == "auto":
        return ("cuda", False) if torch.cuda.is_available() else ("cpu", True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BuildError(f"device {device!r} requested but CUDA is not available on this machine (use cpu or auto)")
    return device, False


def load_net(settings: NetSettings, device: str, logger=log):
    """The LSegNet of `settings` on `device` (weights loaded, or random for a named variant)."""
    from .lseg import LSegNet
    from .variants import named_config

    if settings.weights:
        weights = os.path.expanduser(settings.weights)
        if not os.path.isfile(weights):
            raise BuildError(f"weights file not found: {weights!r}")
        t0 = time.perf_counter()
        try:
            net = LSegNet.from_checkpoint(weights, spatial_block=settings.spatial_block or None,
                                          block_depth=settings.block_depth, activation=settings.activation,
                                          device=device)
        except (ValueError, OSError, RuntimeError) as e:  # CheckpointError is a ValueError
            raise BuildError(f"cannot load weights {weights!r}: {type(e).__name__}: {e}") from e
        logger.info(f"loaded weights {weights} in {time.perf_counter() - t0:.1f} s")
        return net
    try:
        config = named_config(settings.model)
    except ValueError as e:
        raise BuildError(str(e)) from None
    logger.warning(f"NO WEIGHTS: the {settings.model} network is UNTRAINED, its masks are meaningless. Give "
                   "weights (demo_e200.ckpt or the project's .safetensors) for real segmentation.")
    return LSegNet.from_config(config, device=device)


def build_predictor(settings: NetSettings, options=None, warmup: Sequence[int] = (), logger=log):
    """Network + Predictor for `settings` and `options` (a PredictorOptions; None: the defaults), warmed up
    for the batch sizes in `warmup` (needs options.input_size)."""
    import torch

    from .options import PredictorOptions
    from .predictor import Predictor

    device, fell_back = resolve_device_name(settings.device)
    if fell_back:
        logger.warning("device auto: no CUDA device found, running on the CPU: expect seconds per frame with "
                       "ViT-L/16 (set the device to cpu to silence this warning)")
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    options = options or PredictorOptions()
    # with ONNX Runtime the image weights are emptied before the net moves: load them on the CPU
    net = load_net(settings, "cpu" if options.onnx is not None else device, logger)
    try:
        predictor = Predictor(net, device=device, options=options)
    except (ValueError, TypeError) as e:
        raise BuildError(f"cannot build the Predictor: {e}") from e
    if warmup:
        t0 = time.perf_counter()
        predictor.warmup(batch_sizes=warmup)
        o = predictor.options
        paths = ", ".join(k for k in ("compile", "cuda_graphs") if getattr(o, k)) or "eager"
        logger.info(f"fast path ({paths}) warmed up at {o.input_size[0]}x{o.input_size[1]} for batch sizes "
                    f"{list(warmup)} in {time.perf_counter() - t0:.1f} s")
    return predictor
