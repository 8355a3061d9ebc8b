"""Running a config's search: in this process, or in N local worker processes on one study.

Order of work, so that a refused start changes nothing: read the config, load the data,
check the storage URL and connect, take the study file's lock, check the study (exists? same
plan?), and only then create or continue it. Workers are spawned processes that load the
study by name; the parent shows progress by reading the storage.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial

from babysit.errors import UsageError
from babysit.search.config import SearchConfig
from babysit.search.storage import HEARTBEAT_INTERVAL_S, StorageSpec, StudyLock
from babysit.search.study import (
    POLL_S,
    SearchResult,
    SearchStopped,
    check_stopped,
    fail_trials_of,
    load_result,
    open_study,
    parent_watch,
    recover,
    run_trials,
)

__all__ = ["run_search"]

Progress = Callable[[Sequence[FrozenTrial]], None]
# How long the parent waits for workers to stop after Ctrl-C before terminating them.
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def quiet_optuna() -> None:
    """No per-trial log lines or experimental-feature warnings from Optuna on stderr: the
    live table says the same."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_search(
    config: SearchConfig,
    spec: StorageSpec,
    study_name: str,
    *,
    workers: int = 1,
    resume: bool = False,
    progress: Progress | None = None,
    on_start: Callable[[optuna.Study, list[int]], None] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
) -> SearchResult:
    """Run (or continue) the search `config` describes; returns its SearchResult.

    `progress(trials)` is called whenever trials change; `on_start(study, recovered)` once
    the study is open, with the numbers of trials put back in the queue.
    """
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    objective = config.objective() if workers == 1 else None  # workers load their own data
    if objective is None:
        config.objective()  # check the data and model before touching any study
    lock = StudyLock(spec).acquire(exclusive=True)
    try:
        study = open_study(
            config.plan, spec, study_name, resume=resume, heartbeat_interval=heartbeat_interval
        )
        recovered = recover(study, spec)
        if on_start:
            on_start(study, recovered)
        if progress:
            progress(study.get_trials(deepcopy=False))
        if workers == 1:
            callbacks = [lambda s, t: progress(s.get_trials(deepcopy=False))] if progress else []
            run_trials(study, config.plan, objective, callbacks=callbacks)
        else:
            lock.share()
            _run_workers(config, spec, study_name, workers, study, progress, heartbeat_interval)
            check_stopped(study)
        return load_result(study)
    finally:
        lock.release()


def _run_workers(
    config: SearchConfig,
    spec: StorageSpec,
    study_name: str,
    workers: int,
    study: optuna.Study,
    progress: Progress | None,
    heartbeat_interval: int,
) -> None:
    context = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker_main,
            args=(config, spec, study_name, index, threads, heartbeat_interval),
            name=f"babysit-search-worker-{index}",
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        seen: list = []
        buried: set[int] = set()
        while any(p.is_alive() for p in processes):
            time.sleep(POLL_S)
            for p in processes:  # a worker killed on its own (OOM killer): re-queue its trial
                if p.exitcode is not None and p.exitcode != 0 and p.pid not in buried:
                    buried.add(p.pid)
                    fail_trials_of(study, p.pid)
            trials = study.get_trials(deepcopy=False)
            states = [(t.number, t.state) for t in trials]
            if progress and states != seen:
                progress(trials)
                seen = states
        if progress:
            progress(study.get_trials(deepcopy=False))
    except KeyboardInterrupt:
        _stop(processes)
        raise
    failed = [p for p in processes if p.exitcode != 0]
    if failed:
        codes = ", ".join(f"{p.name} exited with {p.exitcode}" for p in failed)
        print(f"babysit: {codes}", file=sys.stderr)


def _stop(processes: Sequence[mp.Process]) -> None:
    """Workers got the same Ctrl-C; give them time to fail and re-queue their trials."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join()


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the parent dies (kill -9 included), so
    that a resumed run never races an orphan worker."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # elsewhere the worker notices between trials (parent_watch)


def _worker_main(
    config: SearchConfig,
    spec: StorageSpec,
    study_name: str,
    index: int,
    threads: int,
    heartbeat_interval: int,
) -> None:
    import torch

    _die_with_parent()
    quiet_optuna()
    torch.set_num_threads(threads)
    should_stop = parent_watch()
    try:
        objective = config.objective()
        with StudyLock(spec).acquire(exclusive=False):
            study = open_study(
                config.plan,
                spec,
                study_name,
                resume=True,
                join=True,
                heartbeat_interval=heartbeat_interval,
            )
            run_trials(study, config.plan, objective, should_stop=should_stop)
    except KeyboardInterrupt:
        sys.exit(130)
    except SearchStopped:
        return  # the parent sees the same failed stage in the study and says so
    except UsageError as e:
        print(f"babysit: worker {index}: error: {e}", file=sys.stderr)
        sys.exit(2)
