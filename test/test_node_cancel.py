"""The worker's mid-frame cancellation: once the event is set, the next stage of the image path raises
Cancelled, in fp32 and in bf16 (where ViT blocks are entered through their attention and MLP), and
removing the hooks restores normal inference. The handoff between the worker's two threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lseg_ros.model import LSegConfig, LSegNet, Predictor
from lseg_ros.node.worker import CancelHooks, Cancelled, Handoff


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


def test_handoff_holds_the_slot_until_the_taker_is_done_when_asked():
    h = Handoff()
    h.put("a")  # overlapping stages (CUDA): the slot is free as soon as the item is taken
    assert h.take(1.0) == "a" and h.wait_empty(0.01)
    h.put("b", hold=True)  # one after the other (the CPU): free only once the taker is done with it
    assert not h.wait_empty(0.01)
    assert h.take(1.0) == "b"
    assert not h.wait_empty(0.05)
    freed = []
    waiter = threading.Thread(target=lambda: freed.append(h.wait_empty(5.0)))
    waiter.start()
    h.done()
    waiter.join(5.0)
    assert freed == [True] and h.take(0.01) is None
