"""Training: a small loop with callbacks, and the Monitor that watches any loop."""

from babysit.train.callbacks import Callback, History, LossAbort, TrainState
from babysit.train.divergence import LOSS_ABORT_FACTOR, diverged, divergence_reason
from babysit.train.evaluate_every import EvaluateEvery, Evaluation
from babysit.train.loop import correct_count, default_device, evaluate, fit
from babysit.train.monitor import Monitor, TrainingStopped
from babysit.train.optimizers import (
    OPTIMIZER_REGISTRY,
    OPTIMIZERS,
    make_optimizer,
    optimizer_help,
    unknown_optimizer,
)
from babysit.train.records import load_history

__all__ = [
    "LOSS_ABORT_FACTOR",
    "OPTIMIZERS",
    "OPTIMIZER_REGISTRY",
    "Callback",
    "EvaluateEvery",
    "Evaluation",
    "History",
    "LossAbort",
    "Monitor",
    "TrainState",
    "TrainingStopped",
    "correct_count",
    "default_device",
    "diverged",
    "divergence_reason",
    "evaluate",
    "fit",
    "load_history",
    "make_optimizer",
    "optimizer_help",
    "unknown_optimizer",
]
