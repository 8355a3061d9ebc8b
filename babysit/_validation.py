"""Checking a scalar argument at the boundary, in the manner of scikit-learn's
`sklearn.utils.check_scalar`: one helper, one message shape ("NAME must be ..., got VALUE")."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from babysit.errors import UsageError

__all__ = ["check_scalar"]

_KINDS = {int: (Integral, "an integer"), float: (Real, "a number")}


def check_scalar(
    value: Any,
    name: str,
    kind: type = int,
    *,
    min: float | None = None,  # noqa: A002 (sklearn's names)
    max: float | None = None,  # noqa: A002
    include_min: bool = True,
    include_max: bool = True,
    allow_none: bool = False,
    expected: str | None = None,
    fix: str = "",
    error: type[Exception] = UsageError,
) -> Any:
    """Return `value` when it is a `kind` (int, or float which also takes ints; never a
    bool, never NaN or inf) within [min, max] (bounds excluded with include_min/include_max=False),
    or None with `allow_none`; raise `error` otherwise, saying what was expected (`expected`
    overrides the description), what was given and `fix` (what to pass instead)."""
    if value is None and allow_none:
        return value
    abc, noun = _KINDS[kind]
    ok = isinstance(value, abc) and not isinstance(value, bool)
    if ok and kind is float:
        ok = math.isfinite(value)
    if ok and min is not None:
        ok = value >= min if include_min else value > min
    if ok and max is not None:
        ok = value <= max if include_max else value < max
    if not ok:
        wanted = expected or _describe(noun, min, max, include_min, include_max)
        wanted += " or None" if allow_none and expected is None else ""
        raise error(f"{name} must be {wanted}, got {value!r}" + (f": {fix}" if fix else ""))
    return value


def _describe(noun: str, low, high, include_min: bool, include_max: bool) -> str:
    if high is None and (low, include_min) in ((1, True), (0, False)) and noun == "an integer":
        return "a positive integer"
    if high is None and (low, include_min) == (0, False):
        return "a positive number"
    if low is not None and high is not None:
        left, right = "[" if include_min else "(", "]" if include_max else ")"
        return f"{noun} in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{noun} {'>=' if include_min else '>'} {low:g}"
    if high is not None:
        return f"{noun} {'<=' if include_max else '<'} {high:g}"
    return noun
