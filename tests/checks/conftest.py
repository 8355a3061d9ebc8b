"""Shared set-ups for the checks' tests: the calibration grid module and digits batches."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `import checkup_grid`

import checkup_grid  # noqa: E402


@pytest.fixture(scope="session")
def digits_std():
    """Standardized digits training inputs (N, 1, 8, 8) and labels."""
    return checkup_grid.std_data()


@pytest.fixture(scope="session")
def digits_raw():
    x, y, _, _ = checkup_grid.digits()
    return x, y


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The checks' many small steps run ~10x faster on one thread on a busy 2-core machine
    (see babysit.doctor.CHECKUP_THREADS); restored after each test."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
