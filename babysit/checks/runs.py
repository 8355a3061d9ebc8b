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
from babysit.data import batches
from babysit.data.batches import Forward, Inputs, model_output, select
from babysit.nn.layers import DROPOUT
from babysit.train import Callback, EvaluateEvery, History, fit

__all__ = [
    "LINEAR_RIDGE_ALPHA",
    "Measure",
    "device_of",
    "linear_baseline",
    "measure",
    "one_hot_ids",
    "recalibrate_batchnorm",
    "train_copy",
    "without_dropout",
]

# The reference classifier: scikit-learn's ridge classifier at its default strength.
LINEAR_RIDGE_ALPHA = 1.0
# Rows it is fitted on, at most (a least-squares fit: O(rows * features^2)).
LINEAR_MAX_ROWS = 2048
# Columns of one-hot encoded integer ids, at most (positions x kept ids): 2048 rows of 1024
# columns fit in ~1 s on one core; for 8 ids of a vocabulary of 12 every id is kept.
LINEAR_MAX_FEATURES = 1024


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
    model: nn.Module, x: Inputs, y: Tensor, task: Task, train_mode: bool = False
) -> tuple[float, float | None]:
    """(loss, accuracy or None) of `model` on (x, y) in one batch; the mode is restored."""
    was_training = model.training
    model.train(train_mode)
    try:
        output = task.output(model, x)
        return float(task.loss(output, y)), accuracy(output, y, task)
    finally:
        model.train(was_training)


class Measure(EvaluateEvery):
    """Every `every` steps (and before the first unless `at_start` is False, and after the
    last), (loss, accuracy) on a fixed batch, in train mode by default as the lecture's
    curves are; stop the run once `done(loss, accuracy)` says so. `records` are (step, loss,
    accuracy)."""

    def __init__(
        self,
        x: Inputs,
        y: Tensor,
        task: Task,
        every: int,
        done=None,
        train_mode=True,
        at_start: bool = True,
    ):
        super().__init__(
            lambda model, x, y: measure(model, x, y, task, train_mode),
            (x, y),
            every=max(1, every),
            at_start=at_start,
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
def recalibrate_batchnorm(
    model: nn.Module, x: Inputs, batch_size: int, forward: Forward | None = None
) -> bool:
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
    n = batches.batch_size(x)
    if not norms or n == 0:
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
        for start in range(0, n - 1, step):
            if min(start + step, n) - start > 1:
                model_output(model, select(x, slice(start, start + step)), forward)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return True


def train_copy(
    model: nn.Module,
    x: Inputs,
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
        batch_size=min(batch_size, len(y)),
        loss_fn=task.loss_fn,
        forward=task.forward,
        callbacks=list(callbacks),
        device=device_of(model),
        seed=seed,
        max_steps=steps,
    )
    return net, history


def one_hot_ids(ids_fit: Tensor, ids_eval: Tensor) -> tuple[Tensor, Tensor]:
    """Integer ids (N, ...) as one-hot rows per position, flattened, for a linear model:
    ids are names, not quantities. The vocabulary is cut to the ids most frequent in
    `ids_fit` (the rest share one "other" column) and the positions to the first ones, so
    that the rows stay within LINEAR_MAX_FEATURES columns."""
    fit, held = ids_fit.reshape(len(ids_fit), -1), ids_eval.reshape(len(ids_eval), -1)
    positions = min(fit.shape[1], LINEAR_MAX_FEATURES // 2)
    fit, held = fit[:, :positions], held[:, :positions]
    values, counts = torch.unique(fit, return_counts=True)
    width = max(1, min(len(values), LINEAR_MAX_FEATURES // positions - 1))
    kept = values[counts.argsort(descending=True, stable=True)[:width]].sort().values

    def encode(ids: Tensor) -> Tensor:
        where = torch.searchsorted(kept, ids).clamp(max=len(kept) - 1)
        code = torch.where(kept[where] == ids, where, len(kept))  # len(kept): "other"
        return nn.functional.one_hot(code, len(kept) + 1).flatten(1)

    return encode(fit), encode(held)


def _linear_features(x_fit: Inputs, x_eval: Inputs) -> tuple[Tensor, Tensor]:
    """The rows the linear baseline reads: the data (`main_input`), flattened; integer ids
    one-hot encoded (`one_hot_ids`)."""
    fit, held = batches.main_input(x_fit), batches.main_input(x_eval)
    fit, held = fit[:LINEAR_MAX_ROWS].detach().cpu(), held.detach().cpu()
    if not (fit.is_floating_point() or fit.is_complex()):
        fit, held = one_hot_ids(fit, held)
    return fit.flatten(1).double(), held.flatten(1).double()


def linear_baseline(
    x_fit: Inputs, labels_fit: Tensor, x_eval: Inputs, labels_eval: Tensor
) -> float:
    """Accuracy on (x_eval, labels_eval) of a ridge classifier (scikit-learn) fitted on
    standardized, flattened inputs (integer ids one-hot encoded): what a linear model makes
    of the data, whatever the user's network does. Used as a baseline by the
    learnable-labels and underfitting checks."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit, held = _linear_features(x_fit, x_eval)
    labels = labels_fit[:LINEAR_MAX_ROWS].cpu().numpy()
    classifier = make_pipeline(StandardScaler(), RidgeClassifier(alpha=LINEAR_RIDGE_ALPHA))
    classifier.fit(fit.numpy(), labels)
    predicted = classifier.predict(held.numpy())
    return float((predicted == labels_eval.cpu().numpy()).mean())
