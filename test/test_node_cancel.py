"""The worker's mid-frame cancellation: once the event is set, the next stage of the image path raises
Cancelled, in fp32 and in bf16 (where ViT blocks are entered through their attention and MLP), and
removing the hooks restores normal inference."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lseg_ros.model import LSegConfig, LSegNet, Predictor
from lseg_ros.node.worker import CancelHooks, Cancelled


@pytest.mark.parametrize("config, precision", [("tiny_vit", "fp32"), ("tiny_vit", "bf16"), ("tiny_resnet", "fp32")])
def test_cancel_event_stops_the_forward_and_hooks_come_off(config, precision):
    torch.manual_seed(0)
    pred = Predictor(LSegNet.from_config(getattr(LSegConfig, config)()), precision=precision)
    labels = pred.encode_labels(["a", "b"])
    image = np.zeros((64, 96, 3), np.uint8)
    event = threading.Event()
    calls = []
    hooks = CancelHooks(pred.net, event)
    counter = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in pred.net.stage_modules()]
    pred.predict(image, labels)  # not set: runs, every stage visited
    assert len(calls) == len(counter) > 4
    event.set()
    with pytest.raises(Cancelled):
        pred.predict(image, labels)
    hooks.remove()
    assert pred.predict(image, labels).mask.shape == (64, 96)
    for h in counter:
        h.remove()
