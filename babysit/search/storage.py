"""Where a study lives: URL handling, opening Optuna storages, and who may run a study file.

Facts from Optuna's docs this follows:
- SQLite (`sqlite:///FILE`, an RDBStorage) is fine for one writer, the embedded default;
  Optuna's FAQ advises against it for parallel optimization ("database is locked").
- `JournalStorage(JournalFileBackend(FILE))` is the file storage meant for several processes
  on one machine (`journal:FILE`), and optuna-dashboard reads it. A run folder's default study
  is such a file for any number of workers, so that `--workers` never changes which study a
  folder holds (a one-process SQLite default used to clash with a `--workers` journal).
- Any other SQLAlchemy URL (PostgreSQL: `postgresql://USER:PASS@HOST/DB`) is an RDBStorage that
  workers on several machines share. It gets a heartbeat and RetryHeartbeatStaleTrialCallback,
  so a trial whose worker died is failed and re-run instead of staying RUNNING forever.

A local file has no heartbeat; instead the process that runs a study file holds a lock on
it (`StudyLock`). A new run or `--resume` takes it exclusively, so when it gets it, no process
can still be working on that file, and trials left RUNNING there (a kill -9) are orphans.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    InMemoryStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend

from babysit.errors import UsageError

__all__ = [
    "HEARTBEAT_GRACE_S",
    "HEARTBEAT_INTERVAL_S",
    "MAX_RETRIES",
    "StorageSpec",
    "StudyLock",
    "Heartbeat",
    "open_storage",
    "resolve_storage",
    "retry_later",
]

# A running trial on a shared database records a heartbeat this often; when none came for
# the grace period, another worker fails the trial and queues it again. Optuna's default grace
# is 2 intervals; 3 leave room for a slow write on a busy server (our choice).
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 30
# A trial that was interrupted (Ctrl-C, kill -9, a dead worker) or raised is queued again with
# the same parameters at most this many times; then it stays failed and the stage goes on.
MAX_RETRIES = 2

DEFAULT_SQLITE = "study.db"
JOURNAL_LOCK_SUFFIX = ".lock"  # JournalFileSymlinkLock's lock link: FILE.lock
DEFAULT_JOURNAL = "study.journal"
_RDB_SCHEMES = ("postgresql", "mysql", "mariadb", "oracle", "mssql", "cockroachdb")
_FORMS = "sqlite:///FILE, journal:FILE or a database URL such as postgresql://USER:PASS@HOST/DB"


@dataclass(frozen=True)
class StorageSpec:
    """A validated storage location. `kind` is "sqlite", "journal", "rdb" or "memory" (one
    process's in-memory study, Optuna's default); `path` is the file of a local storage."""

    url: str
    kind: str
    path: Path | None = None

    @property
    def local(self) -> bool:
        """No other process can reach the study: a local file held by StudyLock, or memory."""
        return self.kind in ("sqlite", "journal", "memory")

    @property
    def display(self) -> str:
        """The URL with any password replaced by ***."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.url)


IN_MEMORY = StorageSpec("memory", "memory")


def resolve_storage(url: str | None, out: Path | str, workers: int = 1) -> StorageSpec:
    """The storage for a run: `url`, or by default the run folder's one study file, whatever
    the number of workers: `out/study.journal` (Optuna's file storage for one or several
    processes), or an existing `out/study.db` made by an earlier version (one process only).
    Checks the form only; `open_storage` connects."""
    out = Path(out)
    if url is None:
        journal, sqlite = out / DEFAULT_JOURNAL, out / DEFAULT_SQLITE
        if sqlite.exists() and not journal.exists():
            if workers > 1:
                raise UsageError(
                    f"the study in {out} is a SQLite file ({sqlite}), which takes one writer at "
                    f"a time (Optuna's FAQ): continue it without --workers, or start a new run "
                    f"folder (--out) for {workers} workers"
                )
            return StorageSpec(f"sqlite:///{sqlite}", "sqlite", sqlite)
        return StorageSpec(f"journal:{journal}", "journal", journal)
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"empty storage URL {url!r}: use {_FORMS}")
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            raise UsageError(
                f"storage URL {url!r} names no file: use sqlite:///FILE (relative) or "
                f"sqlite:////ABSOLUTE/PATH"
            )
        spec = StorageSpec(url, "sqlite", Path(url[len("sqlite:///") :]))
        if workers > 1:
            raise UsageError(
                f"--workers {workers} with SQLite ({url}): SQLite takes one writer at a time "
                f"(Optuna's FAQ); drop --storage to use a journal file, or use PostgreSQL"
            )
        return spec
    if scheme == "journal":
        rest = url[len("journal:") :]
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest:
            raise UsageError(f"storage URL {url!r} names no file: use journal:FILE")
        return StorageSpec(f"journal:{rest}", "journal", Path(rest))
    if scheme.split("+", 1)[0] in _RDB_SCHEMES and "://" in url:
        return StorageSpec(url, "rdb")
    raise UsageError(f"unknown storage URL {url!r}: use {_FORMS}")


def open_storage(
    spec: StorageSpec,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = HEARTBEAT_GRACE_S,
) -> BaseStorage:
    """Connect to the storage, creating a local file (and its folder) if needed. A storage that
    cannot be opened raises a UsageError before any study is touched. A shared database gets
    a heartbeat every `heartbeat_interval` s; a trial silent for `grace_period` s is stale."""
    try:
        if spec.kind == "memory":
            return InMemoryStorage()
        if spec.kind == "journal":
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(_JournalFile(str(spec.path)))
        if spec.kind == "sqlite":
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            storage = RDBStorage(spec.url)
            _write_ahead_log(storage)
            return storage
        return _shared_database(spec, heartbeat_interval, grace_period)
    except ImportError as e:
        driver = spec.url.split(":", 1)[0]
        hint = (
            " (pip install 'babysit[postgres]', or psycopg[binary])"
            if driver.startswith("postgres")
            else ""
        )
        raise UsageError(
            f"no database driver for {spec.display}: {_first_line(e.__cause__ or e)}{hint}"
        ) from None
    except UsageError:
        raise
    except Exception as e:  # SQLAlchemy/OS errors: unreachable server, bad path, bad password
        raise UsageError(f"cannot open storage {spec.display}: {_first_line(e)}") from None


# Workers that start together on a fresh database all create Optuna's tables at once; the
# losers of that race fail with a duplicate-key error and succeed on a second try.
CREATE_ATTEMPTS = 3


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg (3) to SQLAlchemy 2.1, which babysit's postgres extra
    installs (so the same URL works in plain Optuna and optuna-dashboard); with psycopg2 alone
    (an older install), babysit uses it for that URL."""
    import importlib.util

    if (
        url.startswith("postgresql://")
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _shared_database(spec: StorageSpec, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    url = _with_driver(spec.url)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=_retry_callback(),
                    engine_kwargs={"pool_pre_ping": True},
                )
        except ImportError:
            raise
        except Exception as e:
            from sqlalchemy.exc import IntegrityError, ProgrammingError

            if attempt + 1 == CREATE_ATTEMPTS or not isinstance(
                e, IntegrityError | ProgrammingError
            ):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class _JournalFile(JournalFileBackend):
    """Optuna's journal file, appended without an fsync per write: the same guarantee as
    SQLite's WAL with synchronous=NORMAL below. A write survives a crash or kill -9 of the
    process (it is in the kernel's page cache); only a power cut may lose the last writes, and
    a line cut short is removed by the next exclusive run (StudyLock). Measured here: ~8 ms
    per write with the fsync, ~1 ms without; a trial makes a dozen writes. The file is the
    same format, readable by plain Optuna and optuna-dashboard."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not (hasattr(self, "_lock") and hasattr(self, "_file_path")):  # another Optuna
            super().append_logs(logs)
            return
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self._lock.acquire()
        try:
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
        finally:
            self._lock.release()


def _write_ahead_log(storage: RDBStorage) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for the disk
    (measured here: ~9 ms per commit, ~14 commits per trial, more than a 1-epoch digits trial
    trains). A committed trial survives a crash or kill -9 of the process; only a power cut
    may lose the last commits (https://www.sqlite.org/wal.html)."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # reconnect, so that every pooled connection has the pragmas


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return re.sub(r"^\(\S+\)\s*", "", line)  # drop SQLAlchemy's "(psycopg2.OperationalError)"


def _retry_callback() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def retry_later(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue a failed trial again with the same parameters and stage (Optuna's own retry
    callback, which records the chain in `retry_history`), up to MAX_RETRIES times. Returns
    whether it was queued: False once the trial has had its retries (it is given up)."""
    if len(trial.system_attrs.get("retry_history", [])) >= MAX_RETRIES:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        _retry_callback()(study, trial)
    return True


class StudyLock:
    """A lock on a local study file: `exclusive` for a run that may recover orphans, then
    `share()` so that its worker processes can hold it too. flock locks go with the process,
    even on kill -9."""

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.path = spec.path.parent / f".{spec.path.name}.lock" if spec.path else None
        self._fd: int | None = None

    def acquire(self, exclusive: bool) -> StudyLock:
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise UsageError(
                f"{self.spec.path} is in use by another babysit search; wait for it to finish "
                f"or stop it (one machine: use --workers N; several machines: PostgreSQL)"
            ) from None
        if exclusive and self.spec.kind == "journal":
            _repair_journal(self.spec.path)
        return self

    def share(self) -> None:
        """Turn an exclusive lock into a shared one (for worker processes to join)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _repair_journal(path: Path) -> None:
    """What a process killed while writing a journal file may leave, removed by the one process
    that may touch the file now (the holder of the exclusive StudyLock): Optuna's lock link,
    which would make the next write wait out its 30 s grace period, and a last line cut short,
    which would corrupt the line written after it."""
    Path(f"{path}{JOURNAL_LOCK_SUFFIX}").unlink(missing_ok=True)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class Heartbeat:
    """`with Heartbeat(study, trial_id):` while a trial runs on a storage with a heartbeat,
    record one every interval (what Optuna's optimize loop does for its own trials)."""

    def __init__(self, study: optuna.Study, trial_id: int):
        storage = study._storage  # Optuna's private handle: its optimize loop uses the same
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while True:
            self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Heartbeat:
        if self._interval:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
