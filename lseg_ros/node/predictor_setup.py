"""The node's configuration -> a Predictor, through the model library's builder (model/build.py), with
the node's fast-path rule; errors name the file or the setting at fault. No rclpy here: the node
passes its logger."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from .config import NodeConfig


class StartupError(RuntimeError):
    """The node cannot serve (weights, device, labels, parameters): the message names the cause."""


@dataclass(frozen=True)
class FastPath:
    """What the `fast_path` and `input_size` parameters give on a device."""

    compile: bool
    cuda_graphs: bool
    input_size: Optional[Tuple[int, int]]
    warmup: Tuple[int, ...]  # batch sizes warmed up at configure (() = none)


def fast_path(cfg: NodeConfig, device: str) -> FastPath:
    """auto: CUDA graphs on CUDA (each new input shape is captured on its first frame unless input_size
    fixes the shape, which also turns on torch.compile, warmed up at configure: compiling on a frame
    would stall the camera for a minute); on the CPU the Predictor's eager default (prepacked linears,
    channels-last), as compile gains ~1.1x over plain eager for minutes of warm-up. always: compile
    as well wherever it runs (the CPU needs input_size for it). eager: no compile, no CUDA graphs.
    With backend onnxruntime none of these apply (the image path is ONNX Runtime's)."""
    size = cfg.input_hw
    if cfg.backend == "onnxruntime":
        return FastPath(False, False, size, ())
    cuda = device.startswith("cuda")
    compile_ = size is not None and (cfg.fast_path == "always" or (cfg.fast_path == "auto" and cuda))
    graphs = cuda and cfg.fast_path != "eager"
    if cfg.fast_path == "always" and size is None and not cuda:
        raise StartupError("fast_path: always needs input_size on the CPU (torch.compile is built for one shape): "
                           "set input_size, e.g. 480x640")
    cameras = max(1, len(cfg.image_topics))
    warm = tuple(range(1, cameras + 1)) if size is not None and (compile_ or graphs) else ()
    return FastPath(compile_, graphs, size, warm)


def onnx_backend(cfg: NodeConfig):
    """`backend: onnxruntime` -> the OnnxOptions, after the checks that need no weights (onnxruntime
    installed, the file and its description, the providers, the engine cache directory); None for torch."""
    if cfg.backend != "onnxruntime":
        return None
    if not cfg.onnx_model:
        raise StartupError("backend onnxruntime needs onnx_model: the model.onnx written by lseg-export")
    if not cfg.weights:
        raise StartupError("backend onnxruntime needs weights: the checkpoint the ONNX file was exported from "
                           "(its text tower encodes the labels)")
    from lseg_ros.model.onnx_format import OnnxModelError
    from lseg_ros.model.onnx_runtime import OnnxOptions, preflight

    options = OnnxOptions(os.path.expanduser(cfg.onnx_model), tuple(cfg.providers), cfg.trt_engine_cache,
                          threads=cfg.num_threads)
    try:
        preflight(options)
    except OnnxModelError as e:
        raise StartupError(f"backend onnxruntime, onnx_model {cfg.onnx_model!r}: {e}") from e
    return options


def build_predictor(cfg: NodeConfig, logger):
    """NodeConfig -> Predictor (weights, device, precision, threads, fast path or ONNX Runtime, warmed up).
    Raises StartupError naming the file / device / setting at fault."""
    weights = os.path.expanduser(cfg.weights)
    if weights and not os.path.isfile(weights):  # before importing torch: fail in a second
        raise StartupError(f"weights file not found: {weights!r} (parameter 'weights')")
    onnx = onnx_backend(cfg)  # before the weights are loaded: a bad file or setting fails in seconds
    from lseg_ros.model.build import BuildError, NetSettings, build_predictor as build, resolve_device_name
    from lseg_ros.model.onnx_format import OnnxModelError
    from lseg_ros.model.options import PredictorOptions

    try:
        device, _ = resolve_device_name(cfg.device)
        fp = fast_path(cfg, device)
        settings = NetSettings(weights=weights, model=cfg.model, spatial_block=cfg.spatial_block or None,
                               block_depth=cfg.block_depth, activation=cfg.activation, device=cfg.device,
                               num_threads=cfg.num_threads)
        options = PredictorOptions(precision=cfg.precision, max_side=cfg.max_side_or_none, input_size=fp.input_size,
                                   compile=fp.compile, cuda_graphs=fp.cuda_graphs, onnx=onnx)
        predictor = build(settings, options, warmup=fp.warmup, logger=logger)
        if onnx is not None:
            logger.info(f"image path: {predictor.backend}, input size {predictor.input_size or 'per batch'}")
            if predictor.image_path.provider != "CPUExecutionProvider" and predictor.input_size:
                t0 = time.perf_counter()  # TensorRT builds (or loads) its engines now, not on the first frame
                predictor.warmup(batch_sizes=tuple(range(1, max(1, len(cfg.image_topics)) + 1)))
                logger.info(f"{predictor.backend} warmed up in {time.perf_counter() - t0:.1f} s")
        return predictor
    except StartupError:
        raise
    except BuildError as e:
        if isinstance(e.__cause__, OnnxModelError):
            raise StartupError(f"backend onnxruntime, onnx_model {cfg.onnx_model!r}: {e.__cause__}") from e
        raise StartupError(f"{e} (parameters 'weights', 'model', 'device', 'precision')") from e
    except OnnxModelError as e:
        raise StartupError(f"backend onnxruntime, onnx_model {cfg.onnx_model!r}: {e}") from e
    except Exception as e:  # torch errors while placing, converting or warming up
        what = f"cannot load weights {weights!r}" if weights else f"cannot build model {cfg.model!r}"
        raise StartupError(f"{what}: {type(e).__name__}: {e}") from e


def free_device_memory(device: str) -> None:
    """Returns cached CUDA memory to the driver once the model's last reference is gone."""
    if device.startswith("cuda"):
        import torch
        torch.cuda.empty_cache()
