from pathlib import Path

import pytest

from babysit.errors import UsageError
from babysit.search.storage import StudyLock, open_storage, resolve_storage


def test_a_run_folder_has_one_study_file_whatever_the_number_of_workers(tmp_path):
    one = resolve_storage(None, tmp_path)
    assert (one.kind, one.url, one.path) == (
        "journal",
        f"journal:{tmp_path}/study.journal",
        tmp_path / "study.journal",
    )
    assert resolve_storage(None, tmp_path, workers=4) == one and one.local


def test_a_run_folder_with_an_older_sqlite_study_keeps_it_and_refuses_workers(tmp_path):
    (tmp_path / "study.db").write_bytes(b"")
    spec = resolve_storage(None, tmp_path)
    assert (spec.kind, spec.path) == ("sqlite", tmp_path / "study.db")
    with pytest.raises(UsageError, match="is a SQLite file .* continue it without --workers"):
        resolve_storage(None, tmp_path, workers=2)


def test_the_exclusive_lock_repairs_what_a_killed_journal_writer_left(tmp_path):
    spec = resolve_storage(None, tmp_path)
    spec.path.write_bytes(b'{"op_code": 0}\n{"op_co')
    stale = tmp_path / "study.journal.lock"
    stale.symlink_to(spec.path)
    with StudyLock(spec).acquire(exclusive=False):  # a worker joining touches nothing
        assert stale.is_symlink()
    with StudyLock(spec).acquire(exclusive=True):
        assert spec.path.read_bytes() == b'{"op_code": 0}\n' and not stale.is_symlink()


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("sqlite:///runs/s.db", "sqlite", Path("runs/s.db")),
        ("sqlite:////abs/s.db", "sqlite", Path("/abs/s.db")),
        ("journal:runs/s.journal", "journal", Path("runs/s.journal")),
        ("journal:///abs/s.journal", "journal", Path("/abs/s.journal")),
        ("postgresql://u:p@db.example.org:5432/optuna", "rdb", None),
        ("postgresql+psycopg2://u@db/optuna", "rdb", None),
        ("mysql+pymysql://u@db/optuna", "rdb", None),
    ],
)
def test_storage_urls(url, kind, path):
    spec = resolve_storage(url, "unused")
    assert (spec.kind, spec.path) == (kind, path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "unknown storage URL 'redis://localhost'"),
        ("study.db", "unknown storage URL"),
        ("sqlite://relative.db", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("journal:", "names no file"),
        ("  ", "empty storage URL"),
    ],
)
def test_bad_storage_urls_are_refused_with_the_forms_to_use(url, message):
    with pytest.raises(UsageError, match=message):
        resolve_storage(url, "unused")


def test_sqlite_is_refused_for_several_workers():
    with pytest.raises(UsageError, match="SQLite takes one writer"):
        resolve_storage("sqlite:///s.db", "unused", workers=2)


def _no_postgres_driver() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is None for name in ("psycopg", "psycopg2"))


def test_passwords_never_show_in_messages():
    spec = resolve_storage("postgresql://me:s3cret@127.0.0.1:1/db", "unused")
    assert spec.display == "postgresql://me:***@127.0.0.1:1/db"
    with pytest.raises(UsageError) as info:  # no server there, or no driver installed
        open_storage(spec)
    assert "s3cret" not in str(info.value) and "postgresql://me:***@127.0.0.1:1/db" in str(
        info.value
    )


@pytest.mark.skipif(
    _no_postgres_driver(), reason="no PostgreSQL driver: pip install 'babysit[postgres]'"
)
def test_an_unreachable_server_is_one_line_naming_the_storage():
    spec = resolve_storage("postgresql://me:s3cret@127.0.0.1:1/db", "unused")
    with pytest.raises(UsageError) as info:
        open_storage(spec)
    assert str(info.value).startswith("cannot open storage postgresql://me:***@127.0.0.1:1/db")


def test_without_a_postgres_driver_the_message_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(UsageError, match=r"no database driver .*pip install 'babysit\[postgres\]'"):
        open_storage(resolve_storage("postgresql://me:pw@127.0.0.1:1/db", "unused"))


def test_an_unwritable_sqlite_path_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot open storage"):
        open_storage(resolve_storage(f"sqlite:///{blocker}/sub/s.db", tmp_path))


def test_the_study_lock_is_exclusive_then_shared(tmp_path):
    spec = resolve_storage(None, tmp_path)
    first = StudyLock(spec).acquire(exclusive=True)
    with pytest.raises(UsageError, match="in use"):
        StudyLock(spec).acquire(exclusive=False)
    first.share()
    # a worker joins; a second run, which would recover "orphans", may not
    with StudyLock(spec).acquire(exclusive=False), pytest.raises(UsageError, match="in use"):
        StudyLock(spec).acquire(exclusive=True)
    first.release()
    StudyLock(spec).acquire(exclusive=True).release()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # from study.ask() in this test
def test_on_a_shared_database_a_trial_whose_heartbeat_stopped_is_failed_and_queued_again(
    tmp_path,
):
    """What happens when a machine dies mid-trial: its heartbeat stops, and the next worker
    to look fails the trial and queues it again with its parameters (Optuna's heartbeat and
    RetryHeartbeatStaleTrialCallback, as open_storage configures them). SQLite stands in for
    PostgreSQL here: both are Optuna RDB storages."""
    import time

    import optuna
    from optuna.trial import TrialState

    from babysit.search.opening import recover
    from babysit.search.storage import Heartbeat, StorageSpec

    spec = StorageSpec(f"sqlite:///{tmp_path}/shared.db", "rdb")
    study = optuna.create_study(storage=open_storage(spec, heartbeat_interval=1, grace_period=1))
    study.enqueue_trial({"lr": 0.01}, user_attrs={"stage": 0})
    dead = study.ask()  # the enqueued trial, now RUNNING
    dead.suggest_float("lr", 1e-4, 1.0, log=True)
    alive = study.ask()
    with Heartbeat(study, dead._trial_id):
        time.sleep(0.1)  # at least one beat, then the "machine" dies
    with Heartbeat(study, alive._trial_id):
        time.sleep(2.5)  # past the grace period of the dead one; this one keeps beating
        assert recover(study, spec) == [dead.number]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == TrialState.WAITING
    assert retry.params == {"lr": 0.01} and retry.user_attrs == {"stage": 0}
    assert retry.system_attrs["failed_trial"] == dead.number
