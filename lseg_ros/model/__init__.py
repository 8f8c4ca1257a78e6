"""ROS-free LSeg model library (Li et al., ICLR 2022): network, checkpoints, predictor.

See docs/design.md for the contract and docs/model.md for the model itself.

The names below are imported on first use, so the light modules (`variants`, `labels`, `config`)
load without torch: the node checks its parameters and the tools print `--help` in a moment.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "LSegNet": "lseg", "convert_checkpoint": "lseg",
    "LSegConfig": "config",
    "Predictor": "predictor", "Prediction": "predictor",
    "LabelSet": "text",
    "CheckpointError": "checkpoint", "UnsafeCheckpointError": "checkpoint", "save_own": "checkpoint",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, UnsafeCheckpointError, save_own
    from .config import LSegConfig
    from .lseg import LSegNet, convert_checkpoint
    from .predictor import Prediction, Predictor
    from .text import LabelSet


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
