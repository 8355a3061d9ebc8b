"""Short training runs on copies of the user's model, and measuring a model on a batch.

Every check that trains works on `copy.deepcopy(model)`, so the user's model, its weights,
buffers and mode are never touched. The runs go through `babysit.train.fit`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from babysit.checks.task import Task, accuracy
from babysit.nn.layers import DROPOUT
from babysit.train import Callback, EvaluateEvery, History, fit

__all__ = [
    "LINEAR_RIDGE_ALPHA",
    "Measure",
    "device_of",
    "linear_baseline",
    "measure",
    "recalibrate_batchnorm",
    "train_copy",
    "without_dropout",
]

# The reference classifier: scikit-learn's ridge classifier at its default strength.
LINEAR_RIDGE_ALPHA = 1.0
# Rows it is fitted on, at most (a least-squares fit: O(rows * features^2)).
LINEAR_MAX_ROWS = 2048


def device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def without_dropout(model: nn.Module) -> nn.Module:
    """Turn every dropout module off (p = 0), in place: the lecture's "regularization off"."""
    for m in model.modules():
        if isinstance(m, DROPOUT):
            m.p = 0.0
    return model


@torch.no_grad()
def measure(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, train_mode: bool = False
) -> tuple[float, float | None]:
    """(loss, accuracy or None) of `model` on (x, y) in one batch; the mode is restored."""
    was_training = model.training
    model.train(train_mode)
    try:
        output = model(x)
        return float(task.loss(output, y)), accuracy(output, y, task)
    finally:
        model.train(was_training)


class Measure(EvaluateEvery):
    """Every `every` steps (and before the first and after the last), (loss, accuracy) on a
    fixed batch, in train mode by default as the lecture's curves are; stop the run once
    `done(loss, accuracy)` says so. `records` are (step, loss, accuracy)."""

    def __init__(self, x: Tensor, y: Tensor, task: Task, every: int, done=None, train_mode=True):
        super().__init__(
            lambda model, x, y: measure(model, x, y, task, train_mode),
            (x, y),
            every=max(1, every),
            at_end=True,
            mode=None,  # `measure` sets the mode itself
            stop_when=None if done is None else (lambda value: done(*value) and "reached"),
        )

    @property
    def records(self) -> list[tuple[int, float, float | None]]:
        return [(e.step, *e.value) for e in self.evaluations]

    @property
    def reached(self) -> bool:
        return self.stop_reason == "reached"


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: Tensor, batch_size: int) -> bool:
    """Re-estimate every BatchNorm's running mean and variance as the exact average over
    `x` (in batches of `batch_size`) for the weights the model has now, in place; False when
    the model has none. After a short run the running statistics, an exponential average
    over weights that kept changing, can be far from what the trained weights produce: a
    ResNet-18 copy trained 150 Adam steps on raw 0..255 images scored 7% held-out in eval
    mode and 99.8% after this ("precise BN", Wu & Johnson, arXiv:2105.07576). Dropout is off
    meanwhile; the mode is restored."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms or len(x) == 0:
        return False
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, DROPOUT):
                m.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        step = max(2, batch_size)
        for start in range(0, len(x) - 1, step):
            chunk = x[start : start + step]
            if len(chunk) > 1:
                model(chunk)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return True


def train_copy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    lr: float,
    optimizer: str,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    callbacks: Sequence[Callback] = (),
    dropout: bool = True,
) -> tuple[nn.Module, History]:
    """Train a deep copy of `model` on (x, y) for `steps` optimizer steps; return the copy
    and its History. The copy stays on the model's device."""
    net = copy.deepcopy(model)
    if not dropout:
        without_dropout(net)
    history = fit(
        net,
        (x, y),
        epochs=1,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        batch_size=min(batch_size, len(x)),
        loss_fn=task.loss_fn,
        callbacks=list(callbacks),
        device=device_of(model),
        seed=seed,
        max_steps=steps,
    )
    return net, history


def linear_baseline(
    x_fit: Tensor, labels_fit: Tensor, x_eval: Tensor, labels_eval: Tensor
) -> float:
    """Accuracy on (x_eval, labels_eval) of a ridge classifier (scikit-learn) fitted on
    standardized, flattened inputs: what a linear model makes of the data, whatever the
    user's network does. Used as a baseline by the learnable-labels and underfitting checks."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit = x_fit[:LINEAR_MAX_ROWS].detach().flatten(1).double().cpu().numpy()
    labels = labels_fit[:LINEAR_MAX_ROWS].cpu().numpy()
    classifier = make_pipeline(StandardScaler(), RidgeClassifier(alpha=LINEAR_RIDGE_ALPHA))
    classifier.fit(fit, labels)
    predicted = classifier.predict(x_eval.detach().flatten(1).double().cpu().numpy())
    return float((predicted == labels_eval.cpu().numpy()).mean())
