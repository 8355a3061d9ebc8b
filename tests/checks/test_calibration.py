"""The calibration grid as tests: every healthy set-up raises no warning or error, every
planted fault raises its code (see checkup_grid.py). The fast cases run by default, the rest
with `-m slow`; `python tests/checks/checkup_grid.py` prints the measurements."""

import pytest
from checkup_grid import CASES, HEALTHY_ALLOWED

import babysit as bs


def _params(fast: bool):
    return [
        pytest.param(c, id=c.name, marks=() if c.fast else pytest.mark.slow)
        for c in CASES
        if c.fast == fast
    ]


def _check(case):
    model, data, kwargs = case.build()
    report = bs.checkup(model, data, **kwargs)
    found = {f.code for f in report.findings}
    if case.healthy:
        loud = [(f.code, f.message) for f in report.findings if f.severity not in HEALTHY_ALLOWED]
        assert loud == [], f"healthy set-up {case.name!r} raised {loud}"
    else:
        assert case.expect <= found, f"{case.name!r}: expected {set(case.expect)}, got {found}"
        assert "CHECK_FAILED" not in found


@pytest.mark.parametrize("case", _params(fast=True))
def test_fast_grid_case(case):
    _check(case)


@pytest.mark.parametrize("case", _params(fast=False))
def test_slow_grid_case(case):
    _check(case)
