"""Fixtures for the search tests: tiny configs, and a throw-away PostgreSQL server."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _one_thread():
    """Train tiny models on one thread: on a shared 2-core machine torch's thread pool fights
    the other test worker and a digits epoch takes several times longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A data set small enough that a 1-epoch trial takes a few milliseconds: 120 training
# examples of 8 features in 3 classes -> 8 steps of 16 per epoch.
TINY_DATA = "synthetic:n=150,shape=8,classes=3,seed=1"


def write_config(
    path: Path, stages: str | None = None, extra: str = "", space: str | None = None
) -> Path:
    """A tiny TOML search config at `path`."""
    space = (
        space
        or """
        lr = { low = 1e-4, high = 10 }
        weight_decay = { low = 1e-6, high = 1e-1 }
    """
    )
    stages = (
        stages
        or """
        [[stages]]
        trials = 6
        epochs = 1

        [[stages]]
        trials = 3
        epochs = 2
    """
    )
    text = textwrap.dedent(
        f"""
        data = "{TINY_DATA}"
        seed = 0
        {textwrap.dedent(extra)}
        [fixed]
        width = 8
        batch_size = 16

        [space]
        {textwrap.dedent(space)}
        {textwrap.dedent(stages)}
        """
    )
    path.write_text(text)
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.toml")


@pytest.fixture
def make_config():
    """`make_config(path, stages=..., extra=..., space=...)` writes a tiny config."""
    return write_config


@pytest.fixture(scope="module")
def make_config_module():
    return write_config


# --- PostgreSQL ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL URL: $BABYSIT_TEST_POSTGRES_URL, or a server started here from the Debian
    package's binaries (initdb into a temporary folder, pg_ctl start on a free port; as the
    `postgres` user when running as root) and stopped afterwards."""
    url = os.environ.get("BABYSIT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    found = sorted(  # the newest major version: 15 after 9.6
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parts[-3])],
    )
    if not found:
        pytest.skip(
            "PostgreSQL not installed: no /usr/lib/postgresql/*/bin/initdb "
            "(apt-get install postgresql, as .ci/run does, or set BABYSIT_TEST_POSTGRES_URL)"
        )
    pytest.importorskip(
        "psycopg2", reason="psycopg2 not installed: pip install 'babysit[postgres]'"
    )
    bin_dir = Path(found[-1]).parent
    root = tempfile.mkdtemp(prefix="babysit-pg-")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, user="postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, log = f"{root}/data", f"{root}/server.log"
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            detail = result.stderr.strip() or result.stdout.strip()
            if os.path.exists(log):
                detail += "\n" + Path(log).read_text()[-2000:]
            raise RuntimeError(f"{' '.join(args[:2])} failed: {detail}")

    try:
        run(str(bin_dir / "initdb"), "-D", data, "-U", "babysit", "-A", "trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(
            str(bin_dir / "pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start"
        )
        yield f"postgresql+psycopg2://babysit@127.0.0.1:{port}/postgres"
    finally:
        if os.path.exists(f"{data}/postmaster.pid"):
            subprocess.run(
                [*as_postgres, str(bin_dir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
            time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
