"""What an objective receives: one trial's sampled parameters, its stage and budget, and the two
hooks that prune it (the 3x loss rule every step, the stage's pruner every epoch).

    def objective(trial: babysit.search.Trial) -> float:
        model = bs.nn.mlp(64, [trial.params["width"]], 10)
        history = bs.train.fit(model, train, val, epochs=trial.epochs, lr=trial.params["lr"],
                               callbacks=[trial.callback])
        return history.last("val_accuracy")

A loop of one's own calls `trial.check_loss(loss)` after every step and
`trial.report(val_accuracy, epoch)` after every epoch instead of passing `trial.callback`.
Both raise `optuna.TrialPruned` with the reason in the trial's `prune_reason` attribute.

Promotion: in a stage with `promote`, a trial may continue an earlier trial (`trial.parent`),
with its parameters; `trial.load_checkpoint()` returns what that trial passed to
`trial.save_checkpoint(state)`, and it trains `trial.epochs - trial.epochs_before` more.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import optuna

from babysit.search.pruner import PRUNE_REASON, STAGE_ATTR, LossRatioPruner, StagePruner
from babysit.train.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from babysit.search.stages import Stage
    from babysit.train.loop import TrainState

__all__ = ["FIRST_LOSS_ATTR", "Trial", "checkpoint_path"]

# Trial user attribute: the loss of the first step of the trial's line (a continued trial's is
# its first ancestor's), the reference of the 3x rule.
FIRST_LOSS_ATTR = "first_loss"


def checkpoint_path(checkpoints: Path, number: int) -> Path:
    """Where trial `number` keeps its checkpoint in a search's checkpoint folder."""
    return Path(checkpoints) / f"trial-{number}.pt"


class Trial:
    """One trial of a staged search (see the module docstring for how to use it)."""

    def __init__(
        self,
        trial: optuna.Trial,
        stage: int,
        plan: Stage,
        params: dict[str, Any],
        loss_rule: LossRatioPruner,
        metric: str = "val_accuracy",
    ):
        self.optuna = trial
        self.stage = stage
        self.epochs = plan.epochs
        self.steps = plan.steps
        self.params = params
        self.metric = metric
        self.steps_run = 0
        self.parent: int | None = None
        self.epochs_before = 0
        self._loss_rule = loss_rule
        self._first_loss: float | None = None
        self._checkpoints: Path | None = None
        self._keep = False

    def _continue(
        self,
        parent: int,
        epochs_before: int,
        checkpoints: Path,
        first_loss: float | None = None,
    ) -> None:
        """Make this trial the continuation of `parent`, which trained `epochs_before` epochs
        from a first loss of `first_loss`: the 3x rule compares with that loss, not with the
        continued run's first step (a trained model's loss is small, and a noisy batch of 3x
        it is no divergence)."""
        self.parent, self.epochs_before, self._checkpoints = parent, epochs_before, checkpoints
        if first_loss is not None and math.isfinite(first_loss):
            self._first_loss = float(first_loss)

    @property
    def first_loss(self) -> float | None:
        """The 3x rule's reference: the first step's loss (a continued trial: its parent's)."""
        return self._first_loss

    def _keep_checkpoint(self, checkpoints: Path) -> None:
        """Have `save_checkpoint` write: a later stage may continue this trial."""
        self._checkpoints, self._keep = checkpoints, True

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The state the parent trial saved (`save_checkpoint`), or None for a fresh trial.
        Train `epochs - epochs_before` more epochs from it."""
        if self.parent is None or self._checkpoints is None:
            return None
        import torch

        return torch.load(checkpoint_path(self._checkpoints, self.parent), weights_only=True)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save `state` (e.g. model and optimizer state dicts) at the end of the trial, for a
        later stage to continue it; a no-op unless a later stage promotes. Atomic: a kill
        leaves the old file or the new one, never half of one."""
        if not self._keep or self._checkpoints is None:
            return
        import torch

        path = checkpoint_path(self._checkpoints, self.number)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        torch.save(state, partial)
        os.replace(partial, path)

    @property
    def number(self) -> int:
        return self.optuna.number

    def check_loss(self, loss: float | Tensor) -> None:
        """Count a training step; prune when its loss is NaN/inf or above 3x the first one.

        Reading the loss is one host sync per step on a GPU: the price of stopping a
        diverging trial at the step it diverged.
        """
        value = float(loss)
        self.steps_run += 1
        if self._first_loss is None:
            self._first_loss = value
        reason = self._loss_rule.check(self._first_loss, value)
        if reason is not None:
            self.prune(f"{reason} at step {self.steps_run}")

    def report(self, value: float, epoch: int) -> None:
        """Report the validation metric after `epoch` (1-based, of this trial's own run; a
        continued trial's epochs before are added) to the stage's pruner."""
        epoch = int(epoch) + self.epochs_before
        self.optuna.report(float(value), epoch)
        if self.optuna.should_prune():
            self.prune(f"{_pruner_name(self.optuna)}: {self.metric} {value:.4g} at epoch {epoch}")

    def prune(self, reason: str) -> NoReturn:
        """Give the trial up, recording `reason`."""
        self.optuna.set_user_attr(PRUNE_REASON, reason)
        raise optuna.TrialPruned(reason)

    @property
    def callback(self) -> Callback:
        """A `babysit.train.fit` callback: `check_loss` every step, `report` every epoch."""
        return _TrialCallback(self)


class _TrialCallback(Callback):
    def __init__(self, trial: Trial):
        self.trial = trial

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        self.trial.check_loss(loss)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.trial.metric in metrics:
            self.trial.report(metrics[self.trial.metric], int(metrics["epoch"]))


def _pruner_name(trial: optuna.Trial) -> str:
    """The name of the pruner that judges this trial's stage, for the prune reason."""
    pruner = trial.study.pruner
    if isinstance(pruner, LossRatioPruner) and pruner.wrapped is not None:
        pruner = pruner.wrapped
    if isinstance(pruner, StagePruner):
        stage = trial.user_attrs.get(STAGE_ATTR)
        if isinstance(stage, int) and 0 <= stage < len(pruner.pruners):
            pruner = pruner.pruners[stage] or pruner
    return type(pruner).__name__.removesuffix("Pruner").lower() or "pruner"
