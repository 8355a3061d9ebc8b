"""Pruning: the lecture's "give up when the loss exceeds 3x its first value", on Optuna's
BasePruner, and a per-stage dispatch to Optuna's own pruners (median, Hyperband).

Two places apply the 3x rule. `LossRatioPruner.prune` reads a trial's reported intermediate
values when the study minimizes, i.e. when they are losses. babysit's own search maximizes
validation accuracy, so its intermediate values are accuracies per epoch (what Optuna's median
and Hyperband pruners compare) and the training loss never goes through the storage: a
`babysit.search.Trial` checks every step's loss against the first with `LossRatioPruner.check`,
in the training process, so that a diverging trial stops at the step where it diverged without
a database round trip per step.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from babysit.errors import ConfigError
from babysit.train.divergence import LOSS_ABORT_FACTOR, divergence_reason

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "PRUNERS",
    "PRUNE_REASON",
    "STAGE_ATTR",
    "LossRatioPruner",
    "StagePruner",
    "make_pruner",
]

PRUNE_REASON = "prune_reason"  # trial user attribute: why a trial was pruned, in words
STAGE_ATTR = "stage"  # trial user attribute: the index of the stage a trial belongs to
PRUNERS = ("none", "median", "hyperband")
# Hyperband's halving rate: Optuna's default and Li et al. (JMLR 2018)'s eta = 3.
HYPERBAND_REDUCTION_FACTOR = 3


class LossRatioPruner(BasePruner):
    """Prune a trial whose loss exceeds `factor` x its first loss, or becomes NaN/inf.

    CS231n notes, Part 3: "if the cost is ever > 3 * original cost, break out early". In a
    study that minimizes, the reported intermediate values are taken as that loss; otherwise
    only `wrapped` (e.g. `optuna.pruners.MedianPruner()`) is consulted. The reason goes to
    the trial's `prune_reason` user attribute. Assumes a non-negative loss (cross-entropy).
    """

    def __init__(self, factor: float = LOSS_ABORT_FACTOR, wrapped: BasePruner | None = None):
        if not (isinstance(factor, int | float) and factor > 1 and math.isfinite(factor)):
            raise ConfigError(f"the loss ratio must be a number > 1, got {factor!r}")
        self.factor = float(factor)
        self.wrapped = wrapped

    def check(self, first: float, loss: float) -> str | None:
        """The reason to give up, or None: the divergence rule of babysit.train.divergence."""
        return divergence_reason(loss, first, self.factor)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        values = trial.intermediate_values
        if values and study.direction == StudyDirection.MINIMIZE:
            steps = sorted(values)
            reason = self.check(values[steps[0]], values[steps[-1]])
            if reason is not None:
                # Optuna's own SuccessiveHalvingPruner writes to the trial from prune() too.
                study._storage.set_trial_user_attr(
                    trial._trial_id, PRUNE_REASON, f"{reason} at step {steps[-1]}"
                )
                return True
        return self.wrapped is not None and self.wrapped.prune(study, trial)


class StagePruner(BasePruner):
    """Each stage's own pruner (or none), chosen by the trial's `stage` user attribute.

    A median pruner only compares a trial with completed trials of its own stage: earlier
    stages trained for fewer epochs on wider ranges, so their accuracies are no yardstick.
    """

    def __init__(self, pruners: Sequence[BasePruner | None]):
        self.pruners = list(pruners)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        stage = trial.user_attrs.get(STAGE_ATTR)
        if not isinstance(stage, int) or not 0 <= stage < len(self.pruners):
            return False
        pruner = self.pruners[stage]
        if pruner is None:
            return False
        view = study if isinstance(pruner, HyperbandPruner) else _StageView(study, stage)
        return pruner.prune(view, trial)


class _StageView:
    """The study as a pruner should see it: only the trials of one stage."""

    def __init__(self, study: optuna.Study, stage: int):
        self._study = study
        self._stage = stage

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.user_attrs.get(STAGE_ATTR) == self._stage]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def make_pruner(name: str | None, epochs: int | None) -> BasePruner | None:
    """An Optuna pruner for a stage by name: none, median (Optuna's defaults: 5 startup trials)
    or hyperband (1 epoch up to the stage's epochs, halving rate 3)."""
    if name in (None, "none"):
        return None
    if name == "median":
        return MedianPruner()
    if name == "hyperband":
        if not epochs or epochs < 2:
            raise ConfigError(
                f"the hyperband pruner needs a stage of at least 2 epochs, got epochs = {epochs}"
            )
        return HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=HYPERBAND_REDUCTION_FACTOR
        )
    raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
