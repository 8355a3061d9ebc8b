"""check_scalar: the one validation helper for scalar arguments, against scikit-learn's own
check_scalar as the reference for what is accepted."""

import math

import numpy as np
import pytest
from sklearn.utils import check_scalar as sklearn_check_scalar

from babysit._validation import check_scalar
from babysit.errors import UsageError

CASES = [
    (3, int, {"min_val": 1}),
    (0, int, {"min_val": 1}),
    (True, int, {}),
    (2.5, int, {}),
    (np.int64(4), int, {"min_val": 1}),
    (0.5, float, {"min_val": 0, "max_val": 1, "include_boundaries": "left"}),
    (1.0, float, {"min_val": 0, "max_val": 1, "include_boundaries": "left"}),
    (0.0, float, {"min_val": 0, "include_boundaries": "neither"}),
    (7, float, {"min_val": 0}),
    ("3", float, {}),
    (None, int, {}),
]


def _ours(value, kind, kw):
    bounds = {"min": kw.get("min_val"), "max": kw.get("max_val")}
    inclusive = kw.get("include_boundaries", "both")
    return check_scalar(
        value,
        "x",
        kind,
        **bounds,
        include_min=inclusive in ("both", "left"),
        include_max=inclusive in ("both", "right"),
    )


@pytest.mark.parametrize(("value", "kind", "kw"), CASES)
def test_check_scalar_accepts_what_sklearn_accepts(value, kind, kw):
    from numbers import Integral, Real

    target = Integral if kind is int else Real
    try:
        if isinstance(value, bool):  # sklearn takes bools as ints; we never do
            raise TypeError
        sklearn_check_scalar(value, "x", target, **kw)
        accepted = True
    except (TypeError, ValueError):
        accepted = False
    if accepted:
        assert _ours(value, kind, kw) == value
    else:
        with pytest.raises(UsageError, match=r"^x must be .*, got "):
            _ours(value, kind, kw)


def test_check_scalar_says_what_was_expected_and_given_and_the_fix():
    with pytest.raises(UsageError, match=r"^seed must be a positive integer, got 0$"):
        check_scalar(0, "seed", int, min=1)
    with pytest.raises(UsageError, match=r"^lr must be a positive number or None, got -1$"):
        check_scalar(-1, "lr", float, min=0, include_min=False, allow_none=True)
    with pytest.raises(UsageError, match=r"in \[0, 1\), got 1: use 0\.2$"):
        check_scalar(1, "f", float, min=0, max=1, include_max=False, fix="use 0.2")
    with pytest.raises(ValueError, match="an integer >= 0"):
        check_scalar(-2, "n", int, min=0, error=ValueError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_scalar_refuses_non_finite_numbers(value):
    with pytest.raises(UsageError):
        check_scalar(value, "eps", float, min=0)


def test_check_scalar_lets_none_through_only_when_allowed():
    assert check_scalar(None, "every", int, min=1, allow_none=True) is None
    with pytest.raises(UsageError, match="every must be a positive integer, got None"):
        check_scalar(None, "every", int, min=1)
