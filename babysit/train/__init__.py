"""Training: a small loop with callbacks, and the Monitor that watches any loop."""

from babysit.train.callbacks import LOSS_ABORT_FACTOR, Callback, LossAbort
from babysit.train.loop import (
    OPTIMIZERS,
    History,
    TrainState,
    accuracy,
    default_device,
    evaluate,
    fit,
    make_optimizer,
)
from babysit.train.monitor import Monitor, TrainingStopped, load_history

__all__ = [
    "LOSS_ABORT_FACTOR",
    "OPTIMIZERS",
    "Callback",
    "History",
    "LossAbort",
    "Monitor",
    "TrainState",
    "TrainingStopped",
    "accuracy",
    "default_device",
    "evaluate",
    "fit",
    "load_history",
    "make_optimizer",
]
