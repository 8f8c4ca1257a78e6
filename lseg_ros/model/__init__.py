"""ROS-free LSeg model library (Li et al., ICLR 2022): network, checkpoints, predictor.

See docs/design.md for the contract and docs/model.md for the model itself.
"""
from .checkpoint import CheckpointError, UnsafeCheckpointError, save_own
from .config import LSegConfig
from .lseg import LSegNet, convert_checkpoint, load_checkpoint
from .predictor import Prediction, Predictor
from .text import LabelSet

__all__ = ["LSegNet", "LSegConfig", "Predictor", "Prediction", "LabelSet", "CheckpointError",
           "UnsafeCheckpointError", "convert_checkpoint", "load_checkpoint", "save_own"]
