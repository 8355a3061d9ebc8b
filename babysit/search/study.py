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
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from babysit.errors import ConfigError, UsageError
from babysit.search.plan import PLAN_ATTR, Plan, describe_differences
from babysit.search.pruner import STAGE_ATTR, LossRatioPruner, StagePruner, make_pruner
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
    Stage,
    StageSummary,
    check_stages,
    current_stage,
    failed_stage,
    given_up,
    stage_of,
    stage_spaces,
    summarize_stages,
)
from babysit.search.storage import (
    HEARTBEAT_INTERVAL_S,
    IN_MEMORY,
    Heartbeat,
    StorageSpec,
    StudyLock,
    open_storage,
    resolve_storage,
    retry_later,
)
from babysit.search.trial import Trial
from babysit.train.callbacks import LOSS_ABORT_FACTOR

__all__ = [
    "ERROR_ATTR",
    "READY_ATTR",
    "STEPS_ATTR",
    "WORKER_ATTR",
    "SearchResult",
    "SearchStopped",
    "TrialCallback",
    "load_result",
    "open_study",
    "recover",
    "run_trials",
    "search",
]

READY_ATTR = "babysit:ready"  # study user attribute: every stage's trials are queued
RANGES_ATTR = "babysit:ranges:{stage}"  # study user attribute: the ranges a stage samples
STEPS_ATTR = "steps"  # trial user attribute: training steps the trial took
WORKER_ATTR = "worker"  # trial user attribute: HOST:PID of the process that runs it
# How often an idle worker looks at the study while another worker finishes a stage.
POLL_S = 0.5
# How long a worker waits for the study's creator to queue its trials.
READY_TIMEOUT_S = 120.0
# How long a joining process waits for a just-created study's plan to be written (the
# creator writes it right after creating the study, within milliseconds).
PLAN_TIMEOUT_S = 10.0

# Queueing this many trials or more takes seconds (~1 ms each on a local journal file, more
# on a remote database): say so, rather than look hung.
QUEUE_NOTICE = 1000
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
) -> SearchResult:
    """Run a staged random search of `objective(trial) -> float` over `space`.

    `space` maps names to ranges (`{"lr": (1e-6, 10)}` style tables: see `parse_space`);
    `stages` are `Stage(trials, epochs=... | steps=..., pruner=None)`. `storage` is any
    Optuna URL (default: Optuna's own, an in-memory study: no file, gone with the process).
    With `resume`, an existing study of that name is continued (or joined, from another
    machine) instead of refused. `settings` are recorded with the plan, so a resumed run must
    match them. Returns a SearchResult; the study stays readable by optuna-dashboard.
    """
    plan = Plan(
        space=parse_space(_as_tables(space)),
        stages=tuple(check_stages(stages)),
        narrowing=narrowing or Narrowing(),
        seed=seed,
        loss_ratio=loss_ratio,
        direction=direction,
        metric=metric,
        objective=dict(settings or {}),
    )
    spec = IN_MEMORY if storage is None else resolve_storage(storage, Path.cwd())
    with StudyLock(spec).acquire(exclusive=True):
        study, _ = open_study(plan, spec, study_name, resume=resume)
        recover(study, spec)
        run_trials(study, plan, objective, callbacks=callbacks)
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


# --- opening a study ----------------------------------------------------------------------


def _configure(plan: Plan) -> dict[str, Any]:
    """The sampler and pruner every process attaches to the study (neither is stored)."""
    stage_pruners = [make_pruner(s.pruner, s.epochs) for s in plan.stages]
    return {
        "sampler": StageSampler(plan.seed),
        "pruner": LossRatioPruner(plan.loss_ratio, wrapped=StagePruner(stage_pruners)),
    }


def open_study(
    plan: Plan,
    spec: StorageSpec,
    study_name: str,
    *,
    resume: bool,
    join: bool = False,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
) -> tuple[optuna.Study, bool]:
    """Create the study and queue its trials, or load it (`resume`/`join`) after checking it
    was made from the same plan; returns it and whether this call created it. Everything is
    checked before anything is written: a refused start leaves an existing study untouched."""
    if not isinstance(study_name, str) or not study_name.strip():
        raise UsageError(f"the study name must be a non-empty string, got {study_name!r}")
    storage = open_storage(spec, heartbeat_interval)
    names = optuna.study.get_all_study_names(storage)
    if study_name in names:
        if not (resume or join):
            study = optuna.load_study(study_name=study_name, storage=storage)
            raise UsageError(
                f"study {study_name!r} already exists in {spec.display} "
                f"({len(study.get_trials(deepcopy=False))} trials): pass --resume to continue "
                f"it, or choose another --study name"
            )
        return _load(plan, spec, storage, study_name, wait=join), False
    if join:
        raise UsageError(f"study {study_name!r} does not exist in {spec.display}")
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction=plan.direction,
            load_if_exists=False,
            **_configure(plan),
        )
    except optuna.exceptions.DuplicatedStudyError:  # another machine created it just now
        if not resume:
            raise UsageError(
                f"study {study_name!r} was just created in {spec.display} by another process: "
                f"pass --resume to join it"
            ) from None
        return _load(plan, spec, storage, study_name, wait=True), False
    _set_up(study, plan)
    return study, True


def _set_up(study: optuna.Study, plan: Plan) -> None:
    """Store the plan in a new study and queue its trials."""
    study.set_user_attr(PLAN_ATTR, plan.to_json())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([plan.metric])  # optuna-dashboard labels the value with it
    _queue(study, plan)


def _empty(study: optuna.Study) -> bool:
    """No trial and no user attribute: a study created a moment ago, or whose creator died."""
    return not study.user_attrs and not study.get_trials(deepcopy=False)


def _queue(study: optuna.Study, plan: Plan) -> None:
    """Queue each stage's trials (the missing ones, when a creator was cut off) and mark the
    study ready."""
    have: dict[int, int] = {}
    for t in study.get_trials(deepcopy=False):
        have[stage_of(t)] = have.get(stage_of(t), 0) + 1
    missing = sum(max(0, s.trials - have.get(i, 0)) for i, s in enumerate(plan.stages))
    if missing >= QUEUE_NOTICE:
        print(f"babysit: queueing {missing} trials...", file=sys.stderr, flush=True)
    for index, stage in enumerate(plan.stages):
        for _ in range(stage.trials - have.get(index, 0)):
            study.enqueue_trial({}, user_attrs={STAGE_ATTR: index})
    study.set_user_attr(READY_ATTR, True)


def _load(plan: Plan, spec: StorageSpec, storage: Any, study_name: str, wait: bool) -> optuna.Study:
    study = optuna.load_study(study_name=study_name, storage=storage, **_configure(plan))
    stored = study.user_attrs.get(PLAN_ATTR)
    # A process that created the study a moment ago writes the plan right after: on storage
    # other processes share, give it that moment before calling the study foreign.
    deadline = time.monotonic() + PLAN_TIMEOUT_S
    while stored is None and (wait or not spec.local) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        stored = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(PLAN_ATTR)
    if stored is None and _empty(study) and spec.local and not wait:
        # Its creator was killed between creating it and storing the plan (two writes no
        # storage makes atomic); we hold the file exclusively, so no one else is setting it up.
        _set_up(study, plan)
        return study
    if stored is None:
        if _empty(study):
            raise UsageError(
                f"study {study_name!r} in {spec.display} is empty and has no plan (its creator "
                f"was stopped while setting it up): delete it (optuna delete-study "
                f"--study-name {study_name} --storage URL) and start again"
            )
        raise UsageError(
            f"study {study_name!r} in {spec.display} was not made by babysit search; "
            f"choose another --study name"
        )
    if study.direction.name.lower() != plan.direction:
        raise UsageError(
            f"study {study_name!r} {study.direction.name.lower()}s, not {plan.direction}"
        )
    differences = plan.differences(stored)
    if differences:
        raise UsageError(
            f"study {study_name!r} in {spec.display} was started with another config (differs "
            f"in {describe_differences(differences)}); resume it with its own config, or "
            f"choose another --study name"
        )
    # On a shared database another process may still be queueing the trials: wait for it.
    # A local file held exclusively has no other process: finish a set-up that was cut off.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not study.user_attrs.get(READY_ATTR):
        if spec.local and not wait:
            _queue(study, plan)  # we hold the file exclusively: finish the cut-off set-up
            break
        if time.monotonic() >= deadline:
            raise UsageError(
                f"study {study_name!r} in {spec.display} was never fully set up (its creator "
                f"stopped); delete it (optuna delete-study) and start again"
            )
        time.sleep(POLL_S)
        study = optuna.load_study(study_name=study_name, storage=storage, **_configure(plan))
    return study


def recover(study: optuna.Study, spec: StorageSpec) -> list[int]:
    """Put trials a dead process left behind back in the queue; returns their numbers.

    On a local file held exclusively (StudyLock), every RUNNING trial is an orphan: it is
    failed and queued again, and so is any failed trial that has not been retried yet. On a
    shared database, Optuna's heartbeat decides which trials are stale."""
    if not spec.local:
        stale_before = {t.number for t in study.get_trials(states=(TrialState.FAIL,))}
        fail_stale_trials(study)
        return sorted(
            t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.number not in stale_before
        )
    storage = study._storage  # Optuna's private handle: fail_stale_trials uses the same
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    # Interrupted trials (no error of their own) not queued again yet; one that raised stays
    # failed, since running it again would raise again.
    return sorted(t.number for t in given_up(study.get_trials()) if retry_later(study, t))


# --- running trials ------------------------------------------------------------------------


def run_trials(
    study: optuna.Study,
    plan: Plan,
    objective: Objective,
    *,
    callbacks: Sequence[TrialCallback] = (),
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Take queued trials, lowest stage first, and run them until none is left (or
    `should_stop()`); returns how many this process ran. Safe to run in several processes."""
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
                frozen = _run_one(study, plan, objective, queued, stage, space)
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
) -> FrozenTrial:
    trial = optuna.Trial(study, queued._trial_id)
    trial.set_user_attr(WORKER_ATTR, worker_id())
    wrapper: Trial | None = None
    state, value = TrialState.COMPLETE, None
    with Heartbeat(study, queued._trial_id):
        try:
            params = {name: _suggest(trial, name, param) for name, param in space.items()}
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


def worker_id(pid: int | None = None) -> str:
    """HOST:PID, recorded on each trial when it starts (WORKER_ATTR)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def fail_trials_of(study: optuna.Study, pid: int) -> list[int]:
    """Fail and queue again the RUNNING trials of a local worker process known to be dead."""
    owner = worker_id(pid)
    orphans = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(WORKER_ATTR) == owner
    ]
    storage = study._storage
    for t in orphans:
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        retry_later(study, storage.get_trial(t._trial_id))
    return [t.number for t in orphans]
