"""Running a config's search: in this process, or in N local worker processes on one study.

Order of work, so that a refused start changes nothing: read the config, load the data,
check the storage URL and connect, take the study file's lock, check the study (exists? same
plan?), and only then create or continue it. Workers are fresh Python processes that die
with their parent (kill -9 included) from their first instruction, and load the study by
name; the parent shows progress by reading the storage.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial

from babysit.errors import UsageError
from babysit.search.config import SearchConfig
from babysit.search.opening import POLL_S, fail_trials_of, open_study, recover
from babysit.search.storage import HEARTBEAT_INTERVAL_S, StorageSpec, StudyLock
from babysit.search.study import (
    SearchResult,
    SearchStopped,
    check_stopped,
    load_result,
    run_trials,
)

__all__ = ["run_search"]

Progress = Callable[[Sequence[FrozenTrial]], None]
# Small models on a CPU train fastest on one torch thread per process: the example search took
# 22 s with torch's default threads beside one CPU-bound neighbour, 11 s with one (our
# measurement; the checkup and the lab measured the same). `--threads` changes it.
CPU_THREADS = 1
CHECKPOINTS = "checkpoints"  # the default checkpoint folder, beside a local study file
# How long the parent waits for workers to stop after Ctrl-C before terminating them.
STOP_TIMEOUT_S = 10.0


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
    on_start: Callable[[optuna.Study, list[int], bool], None] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    threads: int = CPU_THREADS,
    checkpoints: Path | None = None,
) -> SearchResult:
    """Run (or continue) the search `config` describes; returns its SearchResult.

    `progress(trials)` is called whenever trials change; `on_start(study, recovered)` once
    the study is open, with the numbers of trials put back in the queue and whether this run
    created the study (False: it resumes or joins one). Each process trains
    on `threads` torch threads (restored afterwards in this one). `checkpoints` is the folder
    every worker reads and writes the checkpoints of promoted trials in (default: beside a
    local study file, OUT/checkpoints; on a shared database, give one every machine sees).
    """
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {threads!r}")
    objective = config.objective() if workers == 1 else None  # workers load their own data
    if objective is None:
        config.objective()  # check the data and model before touching any study
    if checkpoints is None and spec.path is not None:
        checkpoints = spec.path.parent / CHECKPOINTS
    lock = StudyLock(spec).acquire(exclusive=True)
    try:
        study, created = open_study(
            config.plan, spec, study_name, resume=resume, heartbeat_interval=heartbeat_interval
        )
        recovered = recover(study, spec)
        if on_start:
            on_start(study, recovered, created)
        if progress:
            progress(study.get_trials(deepcopy=False))
        if workers == 1:
            callbacks = [lambda s, t: progress(s.get_trials(deepcopy=False))] if progress else []
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                run_trials(
                    study, config.plan, objective, callbacks=callbacks, checkpoints=checkpoints
                )
            finally:
                torch.set_num_threads(saved)
        else:
            lock.share()
            task = (config, spec, study_name, threads, heartbeat_interval, checkpoints)
            _run_workers(task, workers, study, progress)
            check_stopped(study)
        return load_result(study)
    finally:
        lock.release()


# What a worker process runs first, before any heavy import (torch, Optuna): ask the kernel to
# kill it when its parent dies (Linux prctl PR_SET_PDEATHSIG), then check that the parent it was
# started by is still its parent (if the parent died before the prctl, the worker is already an
# orphan and stops there). Only then import babysit and read its task from stdin.
_WORKER_BOOT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: the worker notices between trials instead
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
from babysit.search.runner import worker_main
worker_main(sys.stdin.buffer.read())
"""


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def is_alive(self) -> bool:
        return self.process.poll() is None


def _start_worker(index: int, task: bytes) -> _Worker:
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER_BOOT, str(os.getpid())], stdin=subprocess.PIPE
    )
    try:
        process.stdin.write(task)
        process.stdin.close()
    except BrokenPipeError:  # it exited at once; its exit code says why
        pass
    return _Worker(f"babysit-search-worker-{index}", process)


def _run_workers(
    task: tuple, workers: int, study: optuna.Study, progress: Progress | None
) -> None:
    processes = [
        _start_worker(index, pickle.dumps((*task, index, os.getpid())))
        for index in range(workers)
    ]
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


def _stop(processes: Sequence[_Worker]) -> None:
    """Workers got the same Ctrl-C; give them time to fail and re-queue their trials."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in processes:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.terminate()
            worker.process.wait()


def worker_main(task: bytes) -> None:
    """A worker process's work (started by `_WORKER_BOOT`): join the study and run trials
    until none is left or the parent is gone."""
    config, spec, study_name, threads, heartbeat_interval, checkpoints, index, parent = (
        pickle.loads(task)
    )
    quiet_optuna()
    torch.set_num_threads(threads)
    try:
        objective = config.objective()
        with StudyLock(spec).acquire(exclusive=False):
            study, _ = open_study(
                config.plan,
                spec,
                study_name,
                resume=True,
                join=True,
                heartbeat_interval=heartbeat_interval,
            )
            run_trials(
                study,
                config.plan,
                objective,
                should_stop=lambda: os.getppid() != parent,
                checkpoints=checkpoints,
            )
    except KeyboardInterrupt:
        sys.exit(130)
    except SearchStopped:
        return  # the parent sees the same failed stage in the study and says so
    except UsageError as e:
        print(f"babysit: worker {index}: error: {e}", file=sys.stderr)
        sys.exit(2)
