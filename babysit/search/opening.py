"""Opening a study: create it with its plan and queue every stage's trials, or load it after
checking that it was made from the same plan; and put back in the queue the trials a dead
process left running. Everything is checked before anything is written, so a refused start
leaves an existing study untouched (see study.py for how a study is laid out).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from babysit.errors import UsageError
from babysit.search.plan import PLAN_ATTR, Plan, describe_differences
from babysit.search.pruner import STAGE_ATTR, LossRatioPruner, StagePruner, make_pruner
from babysit.search.sampler import StageSampler
from babysit.search.stages import SLOT_ATTR, given_up, stage_of
from babysit.search.storage import (
    HEARTBEAT_INTERVAL_S,
    StorageSpec,
    open_storage,
    retry_later,
)

__all__ = [
    "POLL_S",
    "READY_ATTR",
    "WORKER_ATTR",
    "fail_trials_of",
    "open_study",
    "recover",
    "worker_id",
]

READY_ATTR = "babysit:ready"  # study user attribute: every stage's trials are queued
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
        for slot in range(have.get(index, 0), stage.trials):
            study.enqueue_trial({}, user_attrs={STAGE_ATTR: index, SLOT_ATTR: slot})
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
