"""The Makefile's install step (issue 15.12): the torch pin from pip's configured indexes by
default, PyTorch's CPU wheel index through TORCH_INDEX, and pip's progress shown, not -q."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _install_commands(tmp_path, *variables):
    """The commands `make install` would run into a fresh venv (make -n runs nothing)."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "install", f"VENV={venv}", *variables],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def test_the_default_install_takes_the_pin_from_the_configured_indexes(tmp_path):
    torch_line, babysit_line = _install_commands(tmp_path)
    assert re.search(r"pip install\s+torch==2\.13\.0$", torch_line)
    assert "--index-url" not in torch_line and "-e '.[dev]'" in babysit_line


def test_torch_index_installs_the_cpu_wheel_from_pytorchs_index(tmp_path):
    torch_line, babysit_line = _install_commands(tmp_path, f"TORCH_INDEX={CPU_INDEX}")
    assert f"--index-url {CPU_INDEX} torch==2.13.0" in torch_line
    assert "--index-url" not in babysit_line  # the rest still comes from PyPI


def test_the_install_shows_pips_progress(tmp_path):
    for line in _install_commands(tmp_path):
        assert " -q" not in line.split("pip install", 1)[1]


def test_the_readme_and_the_makefile_document_the_cpu_index():
    for name in ("README.md", "Makefile"):
        text = (ROOT / name).read_text()
        assert f"TORCH_INDEX={CPU_INDEX}" in text and "CUDA" in text
