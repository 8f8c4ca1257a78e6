"""ONNX export of the image path and the onnxruntime backend, without ROS: the `lseg-export` command on
a synthetic released-layout checkpoint, the library's export with dynamic axes and with fp16 weights and
uint8 input, ONNX Runtime's CPU provider against PyTorch (embeddings, masks through the Predictor, one
and two frames), and every refusal with the file or setting it names."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from onnx_exports import ROOT, tiny_net
from ros_harness import photo

from lseg_ros.model import LSegNet, Predictor
from lseg_ros.model.export import CHECK_LABELS, ExportCheckError, ExportOptions, check_export
from lseg_ros.model.onnx_format import OnnxModelError, image_fingerprint, read_export_info
from lseg_ros.model.onnx_runtime import OnnxOptions

pytestmark = pytest.mark.timeout(600)
LABELS = ["person", "table", "chair", "wall", "other"]


def _pair(exports, path, **kw):
    """(torch fp32 Predictor, onnxruntime Predictor) on the tiny ViT's weights, loaded from its files."""
    ref = Predictor(LSegNet.from_checkpoint(exports.vit_weights), precision="fp32", **kw)
    ort = Predictor(LSegNet.from_checkpoint(exports.vit_weights),
                    onnx=OnnxOptions(str(path), providers=("cpu",), threads=1), **kw)
    return ref, ort


def test_cli_export_of_a_released_layout_checkpoint(onnx_exports):
    e = onnx_exports
    meta = json.loads((e.vit.parent / "model.json").read_text())
    assert meta["format"] == "lseg_ros.onnx_image_path" and meta["project_version"]
    assert meta["input"]["shape"] == [1, 3, 96, 128] and meta["input"]["layout"] == "NCHW"
    assert meta["input"]["mean"] == [0.5, 0.5, 0.5] and meta["output"]["shape"] == [1, 32, 48, 64]
    assert meta["weights"]["dtype"] == "fp32" and meta["weights"]["source"] == e.vit_ckpt.name
    # the released file and its safetensors conversion carry the same image weights
    assert meta["weights"]["fingerprint"] == image_fingerprint(LSegNet.from_checkpoint(e.vit_weights))
    check = meta["check"]
    assert check["labels"] == len(CHECK_LABELS) and check["cosine_mean"] >= 0.999 and check["mask_agreement"] >= 0.999
    assert "cosine similarity mean" in e.cli_output and "mask agreement" in e.cli_output, e.cli_output
    print(f"exports made in {e.seconds:.0f} s; {e.cli_output.strip()}")


def test_onnxruntime_predictor_matches_torch_on_one_and_two_frames(onnx_exports):
    ref, ort = _pair(onnx_exports, onnx_exports.vit, input_size=(96, 128))
    assert ort.input_size == (96, 128) and "CPUExecutionProvider" in ort.backend
    assert all(p.numel() == 0 for p in ort.net.pretrained.parameters())  # the file holds the image weights
    frames = [photo(128, 96), photo(200, 150, "astronaut"), photo(90, 70)]  # fits, shrunk, padded
    for batch in ([frames[0]], frames):  # a batch of 3 through a batch-1 graph: run in chunks
        a = ref.predict_batch(batch, LABELS, want_probs=[0], features_stride=4)
        b = ort.predict_batch(batch, LABELS, want_probs=[0], features_stride=4)
        for x, y in zip(a, b):
            assert x.mask.shape == y.mask.shape and (x.mask == y.mask).mean() >= 0.999
            assert np.abs(x.confidence - y.confidence).max() < 1e-4
            assert np.abs(x.probs[0] - y.probs[0]).max() < 1e-4
            assert np.abs(x.features.astype(np.float32) - y.features.astype(np.float32)).max() < 2e-3


def test_dynamic_export_serves_any_size_and_batch(onnx_exports):
    path = onnx_exports.resnet
    info = read_export_info(path)
    assert info.input_size is None and info.batch is None and info.check["inputs"] == [[1, 64, 96], [2, 32, 128]]
    net = tiny_net("tiny_resnet")
    ref = Predictor(net, precision="fp32")
    ort = Predictor(net, onnx=OnnxOptions(str(path), keep_torch_weights=True, threads=1))
    assert ort.input_size is None
    frames = [photo(160, 120), photo(100, 75, "astronaut")]
    for x, y in zip(ref.predict_batch(frames, LABELS), ort.predict_batch(frames, LABELS)):
        assert (x.mask == y.mask).mean() >= 0.999 and np.abs(x.confidence - y.confidence).max() < 1e-4


def test_fp16_uint8_export_matches_fp32_torch_and_is_refused_by_the_predictor(onnx_exports):
    import onnxruntime

    path = onnx_exports.vit_uint8_fp16
    info = read_export_info(path)
    assert (info.weights_dtype, info.input_kind, info.batch, info.input_size) == ("fp16", "uint8", 2, (64, 96))
    assert info.input_shape() == [2, 64, 96, 3] and info.check["cosine_mean"] >= 0.99
    frames = np.stack([photo(96, 64), photo(96, 64, "astronaut")])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": frames})[0])
    net = LSegNet.from_checkpoint(onnx_exports.vit_weights)
    from lseg_ros.model.predictor import normalize_image
    x = torch.cat([normalize_image(f, net.config.mean, net.config.std) for f in frames])
    with torch.no_grad():
        ref = net.embed(x)
    assert got.dtype == torch.float32 and (ref * got).sum(1).mean() > 0.99
    with pytest.raises(OnnxModelError, match="takes uint8 frames"):
        Predictor(net, onnx=OnnxOptions(str(path)))


def _refusal(exports, tmp_path, case):
    """(net, OnnxOptions, input_size) for one bad input."""
    net = LSegNet.from_checkpoint(exports.vit_weights)
    vit = str(exports.vit)
    if case == "not onnx":
        return net, OnnxOptions(str(exports.vit_ckpt)), None
    if case == "no description":
        bare = tmp_path / "bare.onnx"
        bare.write_bytes(exports.vit.read_bytes())
        return net, OnnxOptions(str(bare)), None
    if case == "another architecture":
        return net, OnnxOptions(str(exports.resnet)), None
    if case == "other weights":
        return tiny_net("tiny_vit", seed=1), OnnxOptions(vit), None
    if case == "input size":
        return net, OnnxOptions(vit), (64, 64)
    if case == "unknown provider":
        return net, OnnxOptions(vit, providers=("cpu", "warp_drive")), None
    if case == "provider not installed":
        return net, OnnxOptions(vit, providers=("cuda",)), None
    if case == "unwritable cache":
        (tmp_path / "a_file").write_text("")
        return net, OnnxOptions(vit, trt_engine_cache=str(tmp_path / "a_file" / "engines")), None
    raise AssertionError(case)


@pytest.mark.parametrize("case, message", [
    ("not onnx", "is not an ONNX model"),
    ("no description", "has no description"),
    ("another architecture", "another architecture: backbone 'resnet' (file) vs 'vit' (weights)"),
    ("other weights", "other weights: exported from 'tiny_vit_released.ckpt'"),
    ("input size", "exported for input size 96x128, but input_size is 64x64"),
    ("unknown provider", "'warp_drive' is not an ONNX Runtime execution provider"),
    ("provider not installed", "'cuda' (CUDAExecutionProvider) is not in the installed onnxruntime"),
    ("unwritable cache", "trt_engine_cache: the TensorRT engine cache directory"),
])
def test_bad_files_and_settings_are_refused_naming_them(onnx_exports, tmp_path, case, message):
    import onnxruntime

    if case == "provider not installed" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    net, options, size = _refusal(onnx_exports, tmp_path, case)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(OnnxModelError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        Predictor(net, onnx=options, input_size=size)
    assert os.path.basename(options.model) in str(err.value) or case in ("unknown provider", "provider not installed",
                                                                         "unwritable cache")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing emptied or changed


def test_torch_settings_with_onnx_and_a_graph_that_does_not_reproduce_are_refused(onnx_exports):
    net = LSegNet.from_checkpoint(onnx_exports.vit_weights)
    with pytest.raises(ValueError, match="precision, compile"):
        Predictor(net, precision="bf16", onnx=OnnxOptions(str(onnx_exports.vit)))
    # the check the exporter runs before keeping a file, on a file of other weights
    with pytest.raises(ExportCheckError, match="does not reproduce the PyTorch path: cosine mean"):
        check_export(tiny_net("tiny_vit", seed=1), str(onnx_exports.vit), ExportOptions(size=(96, 128)), photo())


def test_without_onnxruntime_the_backend_says_what_to_install(onnx_exports):
    """onnxruntime made unimportable in a fresh interpreter (sys.modules entry None: import fails)."""
    code = (f"import sys; sys.modules['onnxruntime'] = None\n"
            f"from lseg_ros.node.predictor_setup import StartupError, build_predictor\n"
            f"from lseg_ros.node.config import NodeConfig\n"
            f"import logging\n"
            f"cfg = NodeConfig.from_values(dict(weights={str(onnx_exports.vit_weights)!r}, backend='onnxruntime', "
            f"onnx_model={str(onnx_exports.vit)!r}, providers=[], trt_engine_cache='', num_threads=1))\n"
            f"try:\n    build_predictor(cfg, logging.getLogger())\nexcept StartupError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "needs the onnxruntime package" in out.stdout and "pip install onnxruntime" in out.stdout, \
        out.stdout + out.stderr[-2000:]
    assert "model.onnx" in out.stdout  # names the file
