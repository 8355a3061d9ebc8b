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

from babysit.train import Callback, EvaluateEvery, History, LossAbort, fit

__all__ = [
    "ERROR_SAMPLE",
    "ErrorLog",
    "Run",
    "Training",
    "error_curves",
    "tune_lr",
]

# The training error is measured on this many training examples (the splits are shuffled, so
# the first ones are a random sample): its std at 2% error is ~0.6 points, and measuring it
# every 5 steps adds ~25% to an 8x128 MLP's step time, against ~65% for the whole 1438-image
# split (our measurement on digits).
ERROR_SAMPLE = 512


def _error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(dim=1) != y).float().mean())


class ErrorLog(EvaluateEvery):
    """Every `every` steps (and before the first), the classification error of the model on
    `(x, y)` in eval mode; optionally stops training once it is <= `target`."""

    def __init__(
        self,
        data: tuple[Tensor, Tensor],
        every: int,
        target: float | None = None,
        stop_at_target: bool = True,
    ):
        stop = None
        if target is not None and stop_at_target:
            stop = lambda error: error <= target and f"reached error {error:.3g} <= {target:g}"  # noqa: E731
        super().__init__(_error, data, every=every, mode="eval", stop_when=stop)
        self.target = target

    @property
    def errors(self) -> list[float]:
        return self.values

    @property
    def reached(self) -> int | None:
        """The first step at which the error was <= target (None: never, or no target)."""
        if self.target is None:
            return None
        return next((e.step for e in self.evaluations if e.value <= self.target), None)


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


@dataclass(frozen=True)
class Training:
    """How an experiment trains every network it compares, set once: at most `budget` steps
    of `optimizer` (batches of `batch_size`) on `device`, the error logged every `every`
    steps, stopping at `target` error (unless `stop_at_target` is False) or when the loss
    diverges (the CS231n 3x rule, `babysit.train.LossAbort`)."""

    budget: int
    target: float | None = None
    every: int = 5
    optimizer: str = "sgd"
    device: torch.device | str = "cpu"
    stop_at_target: bool = True
    batch_size: int = 64

    def run(
        self,
        model: nn.Module,
        train: tuple[Tensor, Tensor],
        lr: float,
        seed: int,
        eval_data: tuple[Tensor, Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> Run:
        """Train `model` on `train` at `lr`, the batch order fixed by `seed`, logging the
        error on `eval_data` (default: the first ERROR_SAMPLE training examples)."""
        if eval_data is None:
            eval_data = (train[0][:ERROR_SAMPLE], train[1][:ERROR_SAMPLE])
        log = ErrorLog(eval_data, self.every, self.target, self.stop_at_target)
        history = fit(
            model,
            train,
            epochs=1,
            max_steps=self.budget,
            lr=lr,
            optimizer=self.optimizer,
            batch_size=self.batch_size,
            seed=seed,
            device=self.device,
            callbacks=[log, LossAbort(), *callbacks],
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
