"""`search()`: coarse-to-fine random search, staged on one Optuna study.

How a study is laid out, so that any number of workers and resumed runs agree:
- the plan (space, stages, narrowing, seed, ...) is a study user attribute;
- when the study is created, every trial of every stage is queued at once as a WAITING trial
  tagged with its stage (`user_attrs["stage"]`), without parameters. The trial count of each
  stage is thus fixed from the start: workers only take queued trials, one at a time, with
  Optuna's atomic WAITING -> RUNNING claim, so no trial is run twice or lost;
- a worker takes trials of the lowest stage that still has any. Stage i+1 starts when stage i
  has none left waiting or running; its ranges are computed from stage i's completed trials
  (`stage_spaces`), a pure function of the study that every worker evaluates the same way;
- parameters are sampled when a trial starts, by `StageSampler`, seeded by the trial number.
A trial whose objective raises is failed with the error in its `error` attribute, and the
search goes on; a stage whose trials all raise stops the search (`SearchStopped`). A trial
that is interrupted (Ctrl-C, kill -9, a dead worker) is failed and queued again with the same
parameters (Optuna's RetryHeartbeatStaleTrialCallback), up to MAX_RETRIES times; after that it
is given up, and the result says so (`SearchResult.given_up`, `done` false).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from babysit.errors import ConfigError, UsageError
from babysit.search.opening import POLL_S, WORKER_ATTR, open_study, recover, worker_id
from babysit.search.plan import PLAN_ATTR, Plan
from babysit.search.pruner import LossRatioPruner
from babysit.search.sampler import StageSampler
from babysit.search.space import (
    BoundaryWarning,
    Categorical,
    Float,
    Int,
    Narrowing,
    Param,
    Space,
    parse_space,
    space_to_json,
)
from babysit.search.stages import (
    DEFAULT_STAGES,
    ERROR_ATTR,
    PARENT_ATTR,
    SLOT_ATTR,
    Stage,
    StageSummary,
    check_stages,
    current_stage,
    failed_stage,
    ranked,
    stage_of,
    stage_spaces,
    summarize_stages,
    without_promotion,
)
from babysit.search.storage import (
    IN_MEMORY,
    Heartbeat,
    StudyLock,
    resolve_storage,
    retry_later,
)
from babysit.search.trial import FIRST_LOSS_ATTR, Trial, checkpoint_path
from babysit.train.callbacks import LOSS_ABORT_FACTOR

__all__ = [
    "ERROR_ATTR",
    "STEPS_ATTR",
    "SearchResult",
    "SearchStopped",
    "TrialCallback",
    "check_stopped",
    "load_result",
    "run_trials",
    "search",
]

RANGES_ATTR = "babysit:ranges:{stage}"  # study user attribute: the ranges a stage samples
STEPS_ATTR = "steps"  # trial user attribute: training steps the trial took
# The error recorded on a failed trial is cut to this many characters.
ERROR_CHARS = 300

Objective = Callable[[Trial], float]
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class SearchStopped(Exception):
    """Every trial of a stage raised: the later stages would fail the same way. `study` is
    the study as it stands (`load_result(error.study)` shows it)."""

    def __init__(self, message: str, study: optuna.Study):
        super().__init__(message)
        self.study = study


def check_stopped(study: optuna.Study) -> None:
    """Raise SearchStopped if a stage of the study finished with all its trials failed."""
    trials = study.get_trials(deepcopy=False)
    stage = failed_stage(trials)
    if stage is None:
        return
    mine = [t for t in trials if stage_of(t) == stage and ERROR_ATTR in t.user_attrs]
    first = min(mine, key=lambda t: t.number)
    raise SearchStopped(
        f"stage {stage + 1}: all {len(mine)} trials failed, e.g. trial #{first.number} "
        f"({_describe_params(first.params)}): {first.user_attrs[ERROR_ATTR]}; fix the model or "
        f"objective, then start a new study (another --study or --out)",
        study,
    )


def _describe_params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


@dataclass
class SearchResult:
    """The outcome of a staged search: the Optuna study and what each stage did."""

    study: optuna.Study
    plan: Plan
    stages: list[StageSummary]

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The best completed trial of the study (over all stages), as Optuna counts it."""
        candidates = [s.best for s in self.stages if s.best is not None]
        if not candidates:
            return None
        sign = -1.0 if self.plan.maximize else 1.0
        return min(candidates, key=lambda t: (sign * t.value, t.number))

    @property
    def best_params(self) -> dict[str, Any] | None:
        best = self.best_trial
        return None if best is None else dict(best.params)

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return None if best is None else best.value

    @property
    def warnings(self) -> list[tuple[int, BoundaryWarning]]:
        """Every stage's boundary warnings, as (stage index, warning)."""
        return [(s.index, w) for s in self.stages for w in s.warnings]

    @property
    def final_warnings(self) -> list[BoundaryWarning]:
        """The warnings of the last stage that completed a trial: the ranges the final answer
        came from."""
        finished = [s for s in self.stages if s.best is not None]
        return finished[-1].warnings if finished else []

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @property
    def given_up(self) -> list[int]:
        """Trials interrupted more often than the retry cap allows, not run again: their
        stage is short of its budget."""
        return sorted(n for s in self.stages for n in s.given_up)

    @property
    def done(self) -> bool:
        """Every stage ran its whole budget (failed trials count as run; given-up ones not)."""
        return all(s.pending == 0 and not s.given_up for s in self.stages)


def search(
    objective: Objective,
    space: Mapping[str, Any],
    stages: Sequence[Stage | Mapping[str, Any]] = DEFAULT_STAGES,
    *,
    storage: str | None = None,
    study_name: str = "babysit",
    resume: bool = False,
    seed: int = 0,
    narrowing: Narrowing | None = None,
    loss_ratio: float = LOSS_ABORT_FACTOR,
    direction: str = "maximize",
    metric: str = "val_accuracy",
    callbacks: Sequence[TrialCallback] = (),
    settings: Mapping[str, Any] | None = None,
    checkpoints: str | Path | None = None,
    promotion: bool = True,
) -> SearchResult:
    """Run a staged random search of `objective(trial) -> float` over `space`.

    `space` maps names to ranges (`{"lr": (1e-6, 10)}` style tables: see `parse_space`);
    `stages` are `Stage(trials, epochs=... | steps=..., pruner=None)`. `storage` is any
    Optuna URL (default: Optuna's own, an in-memory study: no file, gone with the process).
    With `resume`, an existing study of that name is continued (or joined, from another
    machine) instead of refused. `settings` are recorded with the plan, so a resumed run must
    match them. `checkpoints` is the folder where trials that a promoting stage continues keep
    their state (default: a temporary folder, gone when the call returns: pass one to resume a
    promoting search in another process). `promotion=False` trains every trial afresh,
    whatever the stages' `promote`. Returns a SearchResult; the study stays readable by
    optuna-dashboard.
    """
    checked = tuple(check_stages(stages))
    plan = Plan(
        space=parse_space(_as_tables(space)),
        stages=checked if promotion else without_promotion(checked),
        narrowing=narrowing or Narrowing(),
        seed=seed,
        loss_ratio=loss_ratio,
        direction=direction,
        metric=metric,
        objective=dict(settings or {}),
    )
    spec = IN_MEMORY if storage is None else resolve_storage(storage, Path.cwd())
    with StudyLock(spec).acquire(exclusive=True), tempfile.TemporaryDirectory() as scratch:
        study, _ = open_study(plan, spec, study_name, resume=resume)
        recover(study, spec)
        folder = Path(checkpoints) if checkpoints is not None else Path(scratch)
        run_trials(study, plan, objective, callbacks=callbacks, checkpoints=folder)
        check_stopped(study)
    return load_result(study)


def _as_tables(space: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept `(low, high)` tuples in Python as shorthand for {low, high}."""
    if not isinstance(space, Mapping):
        raise ConfigError(f"the search space must be a dict of name -> range, got {space!r}")
    return {
        name: {"low": spec[0], "high": spec[1]}
        if isinstance(spec, tuple) and len(spec) == 2 and all(_is_number(v) for v in spec)
        else spec
        for name, spec in space.items()
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- running trials ------------------------------------------------------------------------


def run_trials(
    study: optuna.Study,
    plan: Plan,
    objective: Objective,
    *,
    callbacks: Sequence[TrialCallback] = (),
    should_stop: Callable[[], bool] = lambda: False,
    checkpoints: Path | None = None,
) -> int:
    """Take queued trials, lowest stage first, and run them until none is left (or
    `should_stop()`); returns how many this process ran. Safe to run in several processes.
    `checkpoints` is the folder (shared by all workers) where trials that a later stage may
    continue keep their state; without one, no trial is promoted."""
    ran = 0
    opened: set[int] = set()
    sampler = study.sampler
    while not should_stop():
        check_stopped(study)
        trials = study.get_trials(deepcopy=False)
        stage = current_stage(trials)
        if stage is None:
            return ran
        waiting = sorted(
            (t for t in trials if t.state == TrialState.WAITING and stage_of(t) == stage),
            key=lambda t: t.number,
        )
        if not waiting:  # the stage's last trials run elsewhere: wait for them to finish
            fail_stale_trials(study)
            time.sleep(POLL_S)
            continue
        spaces, _ = stage_spaces(plan.space, trials, stage, plan.narrowing, plan.maximize)
        space = spaces[stage]
        if stage not in opened:
            study.set_user_attr(RANGES_ATTR.format(stage=stage), space_to_json(space))
            opened.add(stage)
        for queued in waiting:
            if _claim(study, queued):
                if isinstance(sampler, StageSampler):
                    sampler.restrict(
                        {n: p.active for n, p in space.items() if isinstance(p, Categorical)}
                    )
                parent = _parent(trials, plan, queued, stage, checkpoints)
                frozen = _run_one(
                    study, plan, objective, queued, stage, space, parent, checkpoints
                )
                ran += 1
                for callback in callbacks:
                    callback(study, frozen)
                break
    return ran


def _claim(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Optuna's atomic WAITING -> RUNNING transition (what `Study.ask` does for queued
    trials): False when another worker got there first."""
    try:
        return study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def _suggest(trial: optuna.Trial, name: str, param: Param) -> Any:
    if isinstance(param, Float):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    if isinstance(param, Int):
        return trial.suggest_int(name, param.low, param.high, log=param.log)
    return trial.suggest_categorical(name, list(param.choices))


def _run_one(
    study: optuna.Study,
    plan: Plan,
    objective: Objective,
    queued: FrozenTrial,
    stage: int,
    space: Space,
    parent: FrozenTrial | None = None,
    checkpoints: Path | None = None,
) -> FrozenTrial:
    if parent is not None:  # before optuna.Trial reads the trial: its suggest_* then agree
        _inherit(study, queued, parent)
        study._storage.set_trial_user_attr(queued._trial_id, PARENT_ATTR, parent.number)
    trial = optuna.Trial(study, queued._trial_id)
    trial.set_user_attr(WORKER_ATTR, worker_id())
    wrapper: Trial | None = None
    state, value = TrialState.COMPLETE, None
    with Heartbeat(study, queued._trial_id):
        try:
            known = trial.params  # a continued trial's (and a retry's) are set already
            params = {
                name: known[name] if name in known else _suggest(trial, name, param)
                for name, param in space.items()
            }
            wrapper = Trial(
                trial,
                stage,
                plan.stages[stage],
                params,
                study.pruner
                if isinstance(study.pruner, LossRatioPruner)
                else LossRatioPruner(plan.loss_ratio),
                plan.metric,
            )
            if parent is not None:
                wrapper._continue(
                    parent.number,
                    plan.stages[stage - 1].epochs,
                    checkpoints,
                    parent.user_attrs.get(FIRST_LOSS_ATTR),
                )
            if checkpoints is not None and _promoted_later(plan, stage):
                wrapper._keep_checkpoint(checkpoints)
            result = objective(wrapper)
            value = _check_value(result)
            if not math.isfinite(value):
                trial.set_user_attr("prune_reason", f"objective returned {value}")
                state, value = TrialState.PRUNED, None
        except optuna.TrialPruned:
            state, value = TrialState.PRUNED, None
        except Exception as error:  # the objective raised: record it, and go on
            trial.set_user_attr(ERROR_ATTR, _one_line(error))
            state, value = TrialState.FAIL, None
        except BaseException:  # Ctrl-C, SystemExit: an interruption, to run again later
            _finish(study, trial, wrapper, TrialState.FAIL, None)
            retry_later(study, study._storage.get_trial(trial._trial_id))
            raise
    return _finish(study, trial, wrapper, state, value)


def _parent(
    trials: Sequence[FrozenTrial],
    plan: Plan,
    queued: FrozenTrial,
    stage: int,
    checkpoints: Path | None,
) -> FrozenTrial | None:
    """The trial a queued trial continues: slot j < promote of a stage continues the j-th best
    completed trial of the stage before (successive halving), if its checkpoint exists; None
    for a fresh trial. A pure function of the study, so every worker and every retry agrees."""
    slot = queued.user_attrs.get(SLOT_ATTR)
    if checkpoints is None or stage == 0 or not isinstance(slot, int):
        return None
    if slot >= plan.stages[stage].promote:
        return None
    best = ranked(trials, stage - 1, plan.maximize)
    if slot >= len(best) or not checkpoint_path(checkpoints, best[slot].number).is_file():
        return None
    return best[slot]


def _promoted_later(plan: Plan, stage: int) -> bool:
    return stage + 1 < len(plan.stages) and plan.stages[stage + 1].promote > 0


def _inherit(study: optuna.Study, queued: FrozenTrial, parent: FrozenTrial) -> None:
    """Give a continued trial its parent's parameters, each with the parent's distribution
    (what `suggest_*` records; a retry already has them)."""
    storage = study._storage
    for name, value in parent.params.items():
        if name not in queued.params:
            distribution = parent.distributions[name]
            storage.set_trial_param(
                queued._trial_id, name, distribution.to_internal_repr(value), distribution
            )


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _check_value(result: Any) -> float:
    if isinstance(result, bool) or not isinstance(result, int | float):
        try:
            return float(result)  # numpy and 0-d torch scalars
        except (TypeError, ValueError):
            raise TypeError(
                f"the objective must return a number (e.g. the validation accuracy), got {result!r}"
            ) from None
    return float(result)


def _finish(
    study: optuna.Study,
    trial: optuna.Trial,
    wrapper: Trial | None,
    state: TrialState,
    value: float | None,
) -> FrozenTrial:
    if wrapper is not None:
        trial.set_user_attr(STEPS_ATTR, wrapper.steps_run)
        if wrapper.first_loss is not None and math.isfinite(wrapper.first_loss):
            trial.set_user_attr(FIRST_LOSS_ATTR, wrapper.first_loss)
    if state == TrialState.COMPLETE:
        return study.tell(trial, value)
    return study.tell(trial, state=state)


# --- results -------------------------------------------------------------------------------


def load_result(study: optuna.Study) -> SearchResult:
    """A SearchResult for any study made by babysit search (finished or not)."""
    stored = study.user_attrs.get(PLAN_ATTR)
    if stored is None:
        raise UsageError(f"study {study.study_name!r} was not made by babysit search")
    plan = Plan.from_json(stored)
    trials = study.get_trials(deepcopy=False)
    summaries = summarize_stages(plan.stages, plan.space, trials, plan.narrowing, plan.maximize)
    return SearchResult(study, plan, summaries)
