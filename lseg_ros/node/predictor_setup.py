"""Node parameters -> a Predictor (weights, device, precision, threads, fast path), with errors that
name the file or the setting at fault. No rclpy here: the node passes its logger."""
from __future__ import annotations

import os
import time
from typing import Any, Dict

from .params import parse_input_size


class StartupError(RuntimeError):
    """The node cannot serve (weights, device, labels, parameters): the message names the cause."""


def build_predictor(cfg: Dict[str, Any], logger) -> Any:
    """Parameters -> Predictor. Raises StartupError naming the file / device / setting at fault."""
    weights = os.path.expanduser(cfg["weights"])
    if weights and not os.path.isfile(weights):  # before importing torch: fail in a second
        raise StartupError(f"weights file not found: {weights!r} (parameter 'weights')")
    import torch

    from lseg_ros.model import LSegConfig, LSegNet, Predictor
    from lseg_ros.model.onnx_format import OnnxModelError

    onnx = onnx_backend(cfg)  # before the weights are loaded: a bad file or setting fails in seconds

    if cfg["num_threads"] > 0:
        torch.set_num_threads(cfg["num_threads"])
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            logger.warning("device auto: no CUDA device found, running on the CPU: expect seconds per frame "
                           "with the full ViT-L/16 model (set device: cpu to silence this warning)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StartupError(f"device {device!r} requested but CUDA is not available on this machine "
                           "(use device: cpu or auto)")
    try:
        if weights:
            t0 = time.perf_counter()
            net = LSegNet.from_checkpoint(weights, spatial_block=cfg["spatial_block"] or None,
                                          block_depth=cfg["block_depth"], activation=cfg["activation"],
                                          device=device if onnx is None else "cpu")  # onnx: image weights freed first
            logger.info(f"loaded weights {weights} in {time.perf_counter() - t0:.1f} s")
        else:
            net = LSegNet.from_config(getattr(LSegConfig, cfg["model"])(), device=device)
            logger.warning(f"NO WEIGHTS (parameter 'weights' is empty): the {cfg['model']} network is UNTRAINED, "
                           "its masks are meaningless. Set weights: /path/to/demo_e200.ckpt (or the "
                           "project's .safetensors) for real segmentation.")
        opts = fast_path_options(cfg, device, onnx is not None)
        predictor = Predictor(net, device=device, precision=cfg["precision"], max_side=cfg["max_side"] or None,
                              input_size=opts["input_size"], compile=opts["compile"],
                              cuda_graphs=opts["cuda_graphs"], onnx=onnx)
        if onnx is not None:
            logger.info(f"image path: {predictor.backend}, input size {predictor.input_size or 'per batch'}")
            if predictor.image_path.provider != "CPUExecutionProvider" and predictor.input_size:
                opts["warmup"] = tuple(range(1, max(1, len(cfg["image_topics"])) + 1))  # TensorRT builds its engine
        if opts["warmup"]:
            t0 = time.perf_counter()
            predictor.warmup(batch_sizes=opts["warmup"])
            what = ", ".join(k for k in ("compile", "cuda_graphs") if opts[k]) or predictor.backend
            logger.info(f"fast path ({what}) warmed up at {predictor.input_size[0]}x{predictor.input_size[1]} for "
                        f"batch sizes {list(opts['warmup'])} in {time.perf_counter() - t0:.1f} s")
        return predictor
    except StartupError:
        raise
    except OnnxModelError as e:
        raise StartupError(f"backend onnxruntime, onnx_model {cfg['onnx_model']!r}: {e}") from e
    except Exception as e:  # CheckpointError, ValueError (precision/device), OSError, torch errors
        what = f"cannot load weights {weights!r}" if weights else f"cannot build model {cfg['model']!r}"
        raise StartupError(f"{what}: {type(e).__name__}: {e}") from e


def onnx_backend(cfg: Dict[str, Any]):
    """`backend: onnxruntime` -> the OnnxOptions, after the checks that need no weights (onnxruntime
    installed, the file and its description, the providers, the engine cache directory); None for torch."""
    if cfg["backend"] != "onnxruntime":
        return None
    if not cfg["onnx_model"]:
        raise StartupError("backend onnxruntime needs onnx_model: the model.onnx written by lseg-export")
    if not cfg["weights"]:
        raise StartupError("backend onnxruntime needs weights: the checkpoint the ONNX file was exported from "
                           "(its text tower encodes the labels)")
    from lseg_ros.model.onnx_format import OnnxModelError
    from lseg_ros.model.onnx_runtime import OnnxOptions, preflight

    options = OnnxOptions(os.path.expanduser(cfg["onnx_model"]), tuple(cfg["providers"]), cfg["trt_engine_cache"],
                          threads=cfg["num_threads"])
    try:
        preflight(options)
    except OnnxModelError as e:
        raise StartupError(f"backend onnxruntime, onnx_model {cfg['onnx_model']!r}: {e}") from e
    return options


def fast_path_options(cfg: Dict[str, Any], device: str, onnx: bool = False) -> Dict[str, Any]:
    """The Predictor's fast-path arguments for the `fast_path` and `input_size` parameters on `device`:
    {compile, cuda_graphs, input_size, warmup: batch sizes to warm up at configure (() = none)}.

    auto: CUDA graphs on CUDA (each new input shape is captured on its first frame unless input_size
    fixes the shape, which also turns on torch.compile, warmed up now: compiling on a frame would
    stall the camera for a minute); on the CPU the Predictor's eager default (prepacked linears,
    channels-last), as compile gains ~1.1x over plain eager for minutes of warm-up. always: compile
    as well wherever it runs (the CPU needs input_size for it). eager: no compile, no CUDA graphs."""
    size = parse_input_size(cfg["input_size"])
    cuda = device.startswith("cuda")
    mode = cfg["fast_path"]
    compile_ = size is not None and (mode == "always" or (mode == "auto" and cuda))
    graphs = cuda and mode != "eager"
    if mode == "always" and size is None and not cuda:
        raise StartupError("fast_path: always needs input_size on the CPU (torch.compile is built for one shape): "
                           "set input_size, e.g. 480x640")
    cameras = max(1, len(cfg["image_topics"]))
    warm = tuple(range(1, cameras + 1)) if size is not None and (compile_ or graphs) else ()
    return {"compile": compile_, "cuda_graphs": graphs, "input_size": size, "warmup": warm}


def free_device_memory(device: str) -> None:
    """Returns cached CUDA memory to the driver once the model's last reference is gone."""
    if device.startswith("cuda"):
        import torch
        torch.cuda.empty_cache()
