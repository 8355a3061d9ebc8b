"""Several worker processes on one PostgreSQL study, as on several machines: each runs
`babysit search CONFIG --storage URL --study NAME --resume`; the first creates the study, the
others join it. No trial may be lost or run twice."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.postgres

WORKERS = 3
STAGES = """
    [[stages]]
    trials = 12
    epochs = 2

    [[stages]]
    trials = 4
    epochs = 2
"""


def test_three_workers_on_one_postgres_study_lose_and_repeat_no_trial(
    postgres_url, tmp_path, make_config
):
    config = make_config(tmp_path / "pg.toml", stages=STAGES)
    command = [
        sys.executable, "-m", "babysit", "search", str(config), "--storage", postgres_url,
        "--study", "pg-three-workers", "--resume", "--no-live",
    ]  # fmt: skip
    workers = [
        subprocess.Popen(
            [*command, "--out", str(tmp_path / f"worker{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for i in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err

    study = optuna.load_study(study_name="pg-three-workers", storage=postgres_url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 12 + 4
    assert Counter(t.user_attrs["stage"] for t in trials) == {0: 12, 1: 4}
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # Every trial ran exactly once, by one of the workers, and several workers took part.
    ran_by = Counter(t.user_attrs["worker"] for t in trials)
    assert sum(ran_by.values()) == 16
    assert len(ran_by) >= 2, ran_by
    # Stage 2 started only after stage 1 had finished, in whichever process.
    last_stage1 = max(t.datetime_complete for t in trials if t.user_attrs["stage"] == 0)
    assert all(t.datetime_start >= last_stage1 for t in trials if t.user_attrs["stage"] == 1)


def test_the_same_postgresql_url_works_in_babysit_and_in_plain_optuna(postgres_url, tmp_path):
    """`postgresql://` is psycopg 3 to SQLAlchemy 2.1: with babysit's postgres extra the URL
    given to babysit opens in plain Optuna (and optuna-dashboard) unchanged."""
    pytest.importorskip(
        "psycopg", reason="psycopg 3 not installed: pip install 'babysit[postgres]'"
    )
    from babysit.search import Stage, search

    plain = "postgresql://" + postgres_url.split("://", 1)[1]
    search(
        lambda t: t.params["lr"],
        {"lr": (1e-3, 1.0)},
        [Stage(2, epochs=1)],
        storage=plain,
        study_name="plain-url",
    )
    study = optuna.load_study(study_name="plain-url", storage=plain)
    assert len(study.trials) == 2 and study.user_attrs["babysit:plan"]
