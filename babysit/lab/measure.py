"""Training measurements the experiments share: the error on a fixed set every few steps, the
number of steps to reach a target error, and a learning rate tuned per network for speed.

Built on `babysit.train.fit` and its callbacks; nothing here decides a claim.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from babysit.train import Callback, History, LossAbort, TrainState, fit

__all__ = [
    "ERROR_SAMPLE",
    "ErrorLog",
    "FixedBatchLog",
    "Run",
    "error_curves",
    "train_run",
    "tune_lr",
]

# The training error is measured on this many training examples (the splits are shuffled, so
# the first ones are a random sample): its std at 2% error is ~0.6 points, and measuring it
# every 5 steps adds ~25% to an 8x128 MLP's step time, against ~65% for the whole 1438-image
# split (our measurement on digits).
ERROR_SAMPLE = 512


class FixedBatchLog(Callback):
    """Every `every` steps, and before the first, `record(state, *data)` on a fixed batch
    `data` moved to the training device, without gradients; the steps logged are `steps`.
    A subclass says what it records; the schedule is this one."""

    def __init__(self, data: tuple[Tensor, ...], every: int):
        self.data = data
        self.every = every
        self.steps: list[int] = []

    def on_train_begin(self, state: TrainState) -> None:
        self._data = tuple(t.to(state.device) for t in self.data)
        self._log(state)

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        if state.step % self.every == 0:
            self._log(state)

    @torch.no_grad()
    def _log(self, state: TrainState) -> None:
        self.steps.append(state.step)
        self.record(state, *self._data)

    def record(self, state: TrainState, *data: Tensor) -> None:
        raise NotImplementedError


class ErrorLog(FixedBatchLog):
    """Every `every` steps (and before the first), the classification error of the model on
    `(x, y)` in eval mode; optionally stops training once it is <= `target`."""

    def __init__(
        self,
        data: tuple[Tensor, Tensor],
        every: int,
        target: float | None = None,
        stop_at_target: bool = True,
    ):
        super().__init__(data, every)
        self.target = target
        self.stop_at_target = stop_at_target
        self.errors: list[float] = []
        self.reached: int | None = None

    def record(self, state: TrainState, x: Tensor, y: Tensor) -> None:
        model = state.model
        was_training = model.training
        model.eval()
        error = float((model(x).argmax(dim=1) != y).float().mean())
        model.train(was_training)
        self.errors.append(error)
        if self.target is not None and self.reached is None and error <= self.target:
            self.reached = state.step
            if self.stop_at_target:
                state.stop(f"reached error {error:.3g} <= {self.target:g}")


@dataclass
class Run:
    """One training run: steps to the target error (None if never reached), whether it
    diverged (NaN loss or > 3x the initial loss), its curves and the trained model."""

    lr: float
    steps: int | None
    diverged: bool
    history: History
    error_steps: list[int] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def final_error(self) -> float:
        return self.errors[-1] if self.errors else math.nan

    def steps_or(self, never: float) -> float:
        """Steps to target, or `never` when it was not reached (use the budget, or inf)."""
        return float(self.steps) if self.steps is not None else never


def train_run(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    *,
    lr: float,
    budget: int,
    target: float | None = None,
    eval_data: tuple[Tensor, Tensor] | None = None,
    every: int = 5,
    stop_at_target: bool = True,
    optimizer: str = "sgd",
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    callbacks: Sequence[Callback] = (),
) -> Run:
    """Train for at most `budget` steps, logging the error on `eval_data` (default: the first
    ERROR_SAMPLE training examples) every `every` steps, stopping at `target` error if asked,
    or when the loss diverges (the CS231n 3x rule, `babysit.train.LossAbort`)."""
    if eval_data is None:
        eval_data = (train[0][:ERROR_SAMPLE], train[1][:ERROR_SAMPLE])
    log = ErrorLog(eval_data, every, target, stop_at_target)
    abort = LossAbort()
    history = fit(
        model,
        train,
        epochs=1,
        max_steps=budget,
        lr=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        seed=seed,
        device=device,
        callbacks=[log, abort, *callbacks],
    )
    diverged = history.stopped and log.reached is None
    return Run(lr, log.reached, diverged, history, log.steps, log.errors, model)


def error_curves(runs: Sequence[Run]) -> dict[str, list[list]]:
    """The runs' training-error curves, as the figures read them: steps and errors per run."""
    return {"steps": [r.error_steps for r in runs], "errors": [r.errors for r in runs]}


def tune_lr(
    run: Callable[[float, int], Run], lrs: Sequence[float], seeds: Sequence[int]
) -> tuple[float, dict[float, list[Run]]]:
    """Run every learning rate on every seed; return the one with the fewest median steps to
    the target (never = inf), ties broken by the lower median final error, and all the runs.

    This is Krizhevsky et al.'s protocol (NIPS 2012: learning rates "chosen independently to
    make training as fast as possible"), applied alike to every network compared. Choosing
    on the median over seeds, not on one seed, avoids picking a rate at the edge of
    stability that diverges on the next seed (our measurement: it happened on digits).
    """
    runs = {lr: [run(lr, seed) for seed in seeds] for lr in lrs}

    def key(lr: float) -> tuple[float, float, float]:
        chosen = runs[lr]
        steps = statistics.median(r.steps_or(math.inf) for r in chosen)
        errors = [math.inf if r.diverged else r.final_error for r in chosen]
        return (steps, statistics.median(errors), lr)

    return min(lrs, key=key), runs
