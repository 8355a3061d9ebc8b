"""kill -9 in the middle of a stage, then --resume: no completed trial is lost or changed,
the trial the kill interrupted is run again with its parameters, the budget is met, and the
promoting stage continues the best trials from their checkpoints on disk."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from babysit.cli import main

STAGES = """
    [[stages]]
    trials = 12
    epochs = 2

    [[stages]]
    trials = 3
    epochs = 3
    promote = 2
"""


def _storage(journal):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def _complete(journal):
    if not journal.exists():
        return 0
    try:
        study = optuna.load_study(study_name="kill", storage=_storage(journal))
    except KeyError:  # not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def test_kill_9_mid_stage_then_resume_keeps_every_completed_trial(make_config, tmp_path):
    config = make_config(tmp_path / "kill.toml", stages=STAGES)
    out = tmp_path / "out"
    db = out / "study.journal"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "babysit",
        "search",
        str(config),
        "--out",
        str(out),
        "--no-live",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _complete(db) < 4:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the search never completed 4 trials"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()

    storage = _storage(db)
    killed = optuna.load_study(study_name="kill", storage=storage).get_trials()
    done = {t.number: (t.params, t.value) for t in killed if t.state == TrialState.COMPLETE}
    running = [t for t in killed if t.state == TrialState.RUNNING]
    assert 4 <= len(done) < 12  # killed in the middle of the first stage
    assert len(running) <= 1

    assert main(["search", str(config), "--out", str(out), "--resume", "--no-live"]) == 0
    trials = optuna.load_study(study_name="kill", storage=_storage(db)).get_trials()
    for number, (params, value) in done.items():
        assert trials[number].state == TrialState.COMPLETE
        assert (trials[number].params, trials[number].value) == (params, value)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12 + 3
    # The second stage's first two trials continued the first stage's best two from the
    # checkpoints on disk, written before and after the kill alike.
    from babysit.search.stages import ranked

    best = [t.number for t in ranked(trials, 0)[:2]]
    second = sorted((t for t in trials if t.user_attrs["stage"] == 1), key=lambda t: t.number)
    assert [t.user_attrs.get("continues") for t in second] == [*best, None]
    assert all((out / "checkpoints" / f"trial-{n}.pt").is_file() for n in best)
    for orphan in running:  # failed, and run again with the parameters it had drawn
        assert trials[orphan.number].state == TrialState.FAIL
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
        assert retry.state.is_finished() and retry.state != TrialState.FAIL
        # the values it had drawn are kept (a kill between two suggest calls leaves some)
        assert orphan.params.items() <= retry.params.items()


def _children(pid):
    """The processes whose parent is `pid`, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _running(pid):
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_workers_die_with_their_parent_even_while_they_are_still_starting(make_config, tmp_path):
    """kill -9 of a --workers run while its workers import torch: no orphan finishes the study
    unattended (they die at once, or stop at their first instruction)."""
    config = make_config(tmp_path / "orphans.toml", stages=STAGES)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "babysit", "search", str(config), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--workers", "2", "--no-live"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(_children(process.pid)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no workers started"
        time.sleep(0.002)
    workers = _children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(w) for w in workers)
