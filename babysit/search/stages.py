"""Stages: coarse to fine. Each stage is a number of trials with a training budget; a stage's
ranges follow from the completed trials of the stage before it (`stage_spaces`).

CS231n notes, Part 3: a coarse stage of short runs ("only a few epochs") over wide ranges,
then finer stages that narrow the ranges and train longer. Everything here is a pure function
of the study's trials, so every worker (and a resumed run) derives the same ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from babysit.errors import ConfigError
from babysit.search.pruner import PRUNE_REASON, STAGE_ATTR, make_pruner
from babysit.search.space import BoundaryWarning, Narrowing, Space, narrow

__all__ = [
    "DEFAULT_STAGES",
    "ERROR_ATTR",
    "PARENT_ATTR",
    "SLOT_ATTR",
    "Stage",
    "StageSummary",
    "check_stages",
    "current_stage",
    "failed_stage",
    "given_up",
    "ranked",
    "stage_of",
    "stage_spaces",
    "summarize_stages",
    "without_promotion",
]


@dataclass(frozen=True)
class Stage:
    """`trials` trials, each trained for `epochs` epochs or `steps` optimizer steps; `pruner`
    ("median" or "hyperband") may stop unpromising trials of a long stage at epoch ends.
    `promote`: how many of the trials continue the best trials of the stage before from their
    checkpoints (successive halving: the best trial, then the second, ...), training up to
    `epochs` in all, instead of starting afresh; the others sample the narrowed ranges."""

    trials: int
    epochs: int | None = None
    steps: int | None = None
    pruner: str | None = None
    promote: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"a stage needs trials >= 1 (an integer), got {self.trials!r}")
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(
                f"a stage needs exactly one budget, epochs or steps, got epochs = {self.epochs}, "
                f"steps = {self.steps}"
            )
        for name in ("epochs", "steps"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"a stage's {name} must be an integer >= 1, got {value!r}")
        make_pruner(self.pruner, self.epochs)  # validates the name and the budget
        if (
            isinstance(self.promote, bool)
            or not isinstance(self.promote, int)
            or not 0 <= self.promote <= self.trials
        ):
            raise ConfigError(
                f"a stage's promote must be an integer in [0, trials = {self.trials}], "
                f"got {self.promote!r}"
            )
        if self.promote and self.epochs is None:
            raise ConfigError("promote needs a stage budget in epochs, not steps")

    @property
    def budget(self) -> str:
        if self.epochs is not None:
            return f"{self.epochs} epoch{'s' * (self.epochs != 1)}"
        return f"{self.steps} steps"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"trials": self.trials}
        data.update(
            {
                k: getattr(self, k)
                for k in ("epochs", "steps", "pruner", "promote")
                if getattr(self, k)
            }
        )
        return data


# The notes' coarse-to-fine progression as successive halving: 1 -> 3 -> 9 -> 27 epochs, each
# later stage continuing the best of the one before from their checkpoints (141 epochs in all).
# The rule: the second stage keeps a third of the first stage's trials (eta = 3), every later
# stage has half its trials continued and half fresh in the narrowed ranges (the last: 2 and 1),
# so the best configuration has trained 9 epochs after 39. Chosen on held-out seeds 12-20 of
# bench/search_efficiency.py's two digits tasks: fewer epochs to 1 point below the best than
# 18 x 1 -> 9 x 3 (6 continued) -> 6 x 9 -> 3 x 27 and the other plans tried (docs/search.md).
DEFAULT_STAGES = (
    Stage(18, epochs=1),
    Stage(6, epochs=3, promote=3),
    Stage(6, epochs=9, promote=3),
    Stage(3, epochs=27, promote=2),
)


def without_promotion(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """The same stages with every trial trained afresh (promote = 0)."""
    return tuple(replace(s, promote=0) for s in stages)


ERROR_ATTR = "error"  # trial user attribute: the exception a failed trial raised, in one line
SLOT_ATTR = "slot"  # trial user attribute: its place in its stage, 0-based (promoted first)
PARENT_ATTR = "continues"  # trial user attribute: the trial whose checkpoint it continued


def stage_of(trial: FrozenTrial) -> int | None:
    stage = trial.user_attrs.get(STAGE_ATTR)
    return stage if isinstance(stage, int) else None


def current_stage(trials: Sequence[FrozenTrial]) -> int | None:
    """The lowest stage with a trial still waiting or running; None when all are done."""
    pending = [
        stage_of(t)
        for t in trials
        if t.state in (TrialState.WAITING, TrialState.RUNNING) and stage_of(t) is not None
    ]
    return min(pending) if pending else None


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were queued again (Optuna's `retry_history`)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def given_up(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that were interrupted (Ctrl-C, kill -9, a dead worker) once more than the retry
    cap allows: failed without an error of their own, and not queued again."""
    retried = _retried(trials)
    return [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and stage_of(t) is not None
        and ERROR_ATTR not in t.user_attrs
        and t.number not in retried
    ]


def failed_stage(trials: Sequence[FrozenTrial]) -> int | None:
    """The first stage whose trials have all finished and none completed or was pruned while
    some raised: the later stages would only fail the same way. None if there is none."""
    by_stage: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if stage_of(t) is not None:
            by_stage.setdefault(stage_of(t), []).append(t)
    for stage in sorted(by_stage):
        mine = by_stage[stage]
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in mine):
            return None
        if not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in mine) and any(
            ERROR_ATTR in t.user_attrs for t in mine
        ):
            return stage
    return None


def ranked(trials: Sequence[FrozenTrial], stage: int, maximize: bool = True) -> list[FrozenTrial]:
    """The stage's completed trials with a finite value, best first (ties: lower number)."""
    done = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and stage_of(t) == stage
        and t.value is not None
        and math.isfinite(t.value)
    ]
    sign = -1.0 if maximize else 1.0
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def stage_spaces(
    space: Space,
    trials: Sequence[FrozenTrial],
    upto: int,
    narrowing: Narrowing,
    maximize: bool = True,
) -> tuple[list[Space], list[list[BoundaryWarning]]]:
    """The space of every stage 0..upto, and each of those stages' boundary warnings (the
    warnings of stage i compare its best trial with the ranges it was sampled from)."""
    spaces, warnings = [dict(space)], []
    for stage in range(upto + 1):
        best_first = ranked(trials, stage, maximize)
        following, stage_warnings = narrow(
            spaces[-1],
            space,
            [t.params for t in best_first],
            narrowing,
            [t.value for t in best_first],
        )
        warnings.append(stage_warnings)
        if stage < upto:
            spaces.append(following)
    return spaces, warnings


@dataclass
class StageSummary:
    """What one stage did: its plan, ranges, trial counts, best trial and warnings."""

    index: int
    stage: Stage
    space: Space
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    pending: int = 0
    given_up: list[int] = field(default_factory=list)
    best: FrozenTrial | None = None
    warnings: list[BoundaryWarning] = field(default_factory=list)
    prune_reasons: dict[str, int] = field(default_factory=dict)


def summarize_stages(
    stages: Sequence[Stage],
    space: Space,
    trials: Sequence[FrozenTrial],
    narrowing: Narrowing,
    maximize: bool = True,
) -> list[StageSummary]:
    """One StageSummary per stage, from the study's trials."""
    spaces, warnings = stage_spaces(space, trials, len(stages) - 1, narrowing, maximize)
    summaries = []
    retried = _retried(trials)
    abandoned = {t.number for t in given_up(trials)}
    for index, stage in enumerate(stages):
        mine = [t for t in trials if stage_of(t) == index]
        best = ranked(trials, index, maximize)
        summary = StageSummary(index, stage, spaces[index], best=best[0] if best else None)
        summary.warnings = warnings[index] if best else []
        for t in mine:
            if t.state == TrialState.COMPLETE:
                summary.complete += 1
            elif t.state == TrialState.PRUNED:
                summary.pruned += 1
                reason = _reason_kind(t.user_attrs.get(PRUNE_REASON, ""))
                summary.prune_reasons[reason] = summary.prune_reasons.get(reason, 0) + 1
            elif t.number in abandoned:
                summary.given_up.append(t.number)
            elif t.state == TrialState.FAIL and t.number not in retried:
                summary.failed += 1
            elif t.state in (TrialState.WAITING, TrialState.RUNNING):
                summary.pending += 1
        summaries.append(summary)
    return summaries


def _reason_kind(reason: str) -> str:
    """Group prune reasons for a summary line: "diverged" (3x or NaN) or the pruner's name."""
    if reason.startswith("loss"):
        return "diverged"
    return reason.split(":", 1)[0] or "pruned"


def check_stages(stages: Sequence[Stage | Mapping[str, Any]]) -> list[Stage]:
    """Stage objects from Stage instances or plain tables ({trials = 40, epochs = 1})."""
    if isinstance(stages, Mapping | str) or not isinstance(stages, Sequence) or not stages:
        raise ConfigError(
            f"stages must be a non-empty list such as [{{trials = 40, epochs = 1}}], got {stages!r}"
        )
    result = []
    for index, item in enumerate(stages):
        if isinstance(item, Stage):
            result.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"stage {index + 1} must be a table of trials and epochs, got {item!r}"
            )
        unknown = set(item) - {"trials", "epochs", "steps", "pruner", "promote"}
        if unknown:
            raise ConfigError(
                f"stage {index + 1}: unknown key {sorted(unknown)[0]!r}; "
                f"use trials, epochs or steps, pruner, promote"
            )
        if "trials" not in item:
            raise ConfigError(f"stage {index + 1} needs a number of trials, e.g. trials = 20")
        try:
            result.append(Stage(**item))
        except ConfigError as e:
            raise ConfigError(f"stage {index + 1}: {e}") from None
    for index, stage in enumerate(result):
        if not stage.promote:
            continue
        before = result[index - 1] if index else None
        if before is None or before.epochs is None or before.epochs >= stage.epochs:
            raise ConfigError(
                f"stage {index + 1}: promote continues trials of the stage before, so it needs "
                f"one, with fewer epochs than this stage's {stage.epochs}"
            )
    return result
