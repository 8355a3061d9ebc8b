"""The search space, and how a stage narrows it around its best trials.

CS231n notes, "Neural Networks Part 3" (hyperparameter optimization): search the learning rate
and the regularization strength on a log scale (`lr = 10 ** uniform(-6, 1)`), from coarse to
fine, and make sure the best value is not on the border of the range. Here a range is a
`Float`, `Int` or `Categorical`; `narrow` turns one stage's results into the next stage's
ranges and the boundary warnings. All arithmetic on a range happens on its *axis*: log10 of
the value for a log-scale range, the value itself otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from babysit.errors import ConfigError

__all__ = [
    "EDGE_FRACTION",
    "LOG_BY_DEFAULT",
    "MARGIN_FRACTION",
    "PAD_FRACTION",
    "TOP_FRACTION",
    "TOP_MIN",
    "WIDEN_FRACTION",
    "BoundaryWarning",
    "Categorical",
    "Float",
    "Int",
    "Narrowing",
    "Param",
    "Space",
    "narrow",
    "parse_space",
    "space_from_json",
    "space_to_json",
    "with_limits",
    "within",
]

# The lecture samples these two on a log scale; any other numeric range is linear unless the
# config says `log = true`.
LOG_BY_DEFAULT = ("lr", "weight_decay")

# Which trials define the next range: the best 20% of a stage's completed trials, and never
# fewer than 3, so that one lucky trial does not collapse the range (the brief's rule of thumb).
TOP_FRACTION = 0.2
TOP_MIN = 3
# The good region also takes every trial whose value lies within this fraction of the gap
# between the stage's best and its median value from the best: when many trials do about as
# well as the best (a net that trains over two decades of lr), the next range keeps them all
# instead of the top k's span only. 0 turns it off (the top k alone): the default, since 0.25
# took more epochs to the bench's target on held-out seeds (docs/search.md).
MARGIN_FRACTION = 0.0
# Padding added on each side of the top trials' [min, max], as a fraction of the old span (on
# the axis). 10% keeps at least a fifth of the old span, and gives a top trial near an edge a
# margin as wide as the boundary-warning margin below. Our choice; in our digits runs a 20-30
# trial coarse stage over lr 1e-6..10 narrowed the 7 decades to 2-4.
PAD_FRACTION = 0.1
# A best value closer than this fraction of the span to an edge of the range it was sampled
# from raises a boundary warning: the optimum may lie outside (CS231n notes: "make sure the
# best value is not on the border").
EDGE_FRACTION = 0.1
# With auto-widen, a side with a boundary warning moves outwards by this fraction of the span.
WIDEN_FRACTION = 0.5


@dataclass(frozen=True)
class _Range:
    """A numeric range [low, high], sampled uniformly on its axis: log10 of the value when
    `log`, else the value. Narrowing and boundary warnings measure distances on this axis.

    `limits` are hard bounds of the hyperparameter itself (dropout lies in [0, 1): limits
    (0, 1), open_limits (False, True)): widening never crosses them and no boundary warning
    points past them.
    """

    low: float
    high: float
    log: bool = False
    limits: tuple[float, float] = (-math.inf, math.inf)
    open_limits: tuple[bool, bool] = (False, False)
    _distribution: ClassVar[type[FloatDistribution] | type[IntDistribution]]

    def axis(self, value: float) -> float:
        return math.log10(value) if self.log else float(value)

    def value(self, axis: float) -> float:
        return 10.0**axis if self.log else float(axis)

    def distribution(self) -> BaseDistribution:
        return self._distribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        scale = ", log" if self.log else ""
        return f"[{_fmt(self.low)}, {_fmt(self.high)}{scale}]"


class Float(_Range):
    """A float range [low, high] (see `_Range`)."""

    _distribution = FloatDistribution


class Int(_Range):
    """An integer range [low, high], inclusive (see `_Range`); low and high are ints."""

    _distribution = IntDistribution


@dataclass(frozen=True)
class Categorical:
    """A choice among values. `choices` is the full set, fixed for the whole study (Optuna
    requires it); `kept` is the subset a stage samples from after narrowing."""

    choices: tuple
    kept: tuple | None = None

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)

    @property
    def active(self) -> tuple:
        return self.choices if self.kept is None else self.kept

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.active)) + "}"


Param = Float | Int | Categorical
Space = dict[str, Param]


# A config's [narrowing] keys, and the Narrowing fields they set.
NARROWING_KEYS = {
    "top": "top_fraction",
    "top_min": "top_min",
    "pad": "pad",
    "edge": "edge",
    "widen": "widen",
    "margin": "margin",
}


@dataclass(frozen=True)
class Narrowing:
    """How a stage's results become the next stage's ranges (see `narrow`)."""

    top_fraction: float = TOP_FRACTION
    top_min: int = TOP_MIN
    pad: float = PAD_FRACTION
    edge: float = EDGE_FRACTION
    widen: bool = False
    margin: float = MARGIN_FRACTION

    def __post_init__(self) -> None:
        checks = (
            ("top", self.top_fraction, 0 < self.top_fraction <= 1, "a fraction in (0, 1]"),
            ("top_min", self.top_min, self.top_min >= 1, "an integer >= 1"),
            ("pad", self.pad, 0 < self.pad <= 1, "a fraction in (0, 1]"),
            ("edge", self.edge, 0 <= self.edge < 0.5, "a fraction in [0, 0.5)"),
            ("margin", self.margin, 0 <= self.margin <= 1, "a fraction in [0, 1]"),
        )
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"narrowing {name} must be {expected}, got {value!r}")

    def top_count(self, completed: int, values: Sequence[float] | None = None) -> int:
        """How many of a stage's `completed` trials (best first; `values`: theirs) set the
        next ranges: the top fraction, at least top_min, and with a margin every trial within
        margin x |best - median| of the best."""
        count = min(completed, max(self.top_min, math.ceil(self.top_fraction * completed)))
        if self.margin and values:
            best, gap = values[0], abs(values[0] - statistics.median(values))
            close = sum(abs(v - best) <= self.margin * gap for v in values)
            count = max(count, min(close, completed))
        return count

    def to_dict(self) -> dict[str, Any]:
        """The config's [narrowing] table (keys top, top_min, pad, edge, widen, and margin
        when it is on: a study stored before margin existed keeps the same plan)."""
        table = {key: getattr(self, field) for key, field in NARROWING_KEYS.items()}
        if not table["margin"]:
            del table["margin"]
        return table

    @classmethod
    def from_dict(cls, raw: Any) -> Narrowing:
        """From a config's [narrowing] table or a stored plan; missing keys keep their default,
        a wrong key or type is a ConfigError that names it."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[narrowing] must be a table, got {raw!r}")
        unknown = set(raw) - set(NARROWING_KEYS)
        if unknown:
            raise ConfigError(
                f"[narrowing]: unknown key {sorted(unknown)[0]!r}; use {', '.join(NARROWING_KEYS)}"
            )
        values = {field: raw[key] for key, field in NARROWING_KEYS.items() if key in raw}
        for key, value in raw.items():
            if key == "widen" and not isinstance(value, bool):
                raise ConfigError(f"[narrowing] widen must be true or false, got {value!r}")
            kinds = int if key == "top_min" else int | float
            if key != "widen" and (isinstance(value, bool) or not isinstance(value, kinds)):
                expected = "an integer" if key == "top_min" else "a number"
                raise ConfigError(f"[narrowing] {key} must be {expected}, got {value!r}")
        return cls(**values)


@dataclass(frozen=True)
class BoundaryWarning:
    """The best value of `param` lies within the edge margin of `side` ("low"/"high")."""

    param: str
    side: str
    best: float
    low: float
    high: float
    log: bool
    suggestion: float

    @property
    def message(self) -> str:
        edge = self.low if self.side == "low" else self.high
        direction = "downwards" if self.side == "low" else "upwards"
        scale = " (log scale)" if self.log else ""
        return (
            f"{self.param}: best {_fmt(self.best)} is at the {self.side} edge {_fmt(edge)} of "
            f"[{_fmt(self.low)}, {_fmt(self.high)}]{scale}; widen the range {direction}, "
            f"e.g. {self.side} = {_fmt(self.suggestion)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "side": self.side,
            "best": self.best,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "suggestion": self.suggestion,
            "message": self.message,
        }


def narrow(
    space: Mapping[str, Param],
    original: Mapping[str, Param],
    ranked: Sequence[Mapping[str, Any]],
    settings: Narrowing = Narrowing(),
    values: Sequence[float] | None = None,
) -> tuple[Space, list[BoundaryWarning]]:
    """The next stage's space from this stage's completed trials, best first (`ranked`: their
    params), plus a boundary warning for every numeric parameter whose best value sits within
    `settings.edge` of the span from an edge of the range it was sampled from.

    The good region is the top k (`Narrowing.top_count`; with `settings.margin` and the
    trials' `values`, best first, also every trial about as good as the best).
    Numeric: the good trials' [min, max] on the axis, padded by `settings.pad` x the old span
    on each side, clipped to the original range (or to where earlier widening took it). With
    `settings.widen`, a side with a warning moves outwards by WIDEN_FRACTION x the span instead.
    Categorical: the values that appear among the good trials. With no completed trial the space is
    kept as it is.
    """
    if not ranked:
        return dict(space), []
    top = ranked[: settings.top_count(len(ranked), values)]
    best = ranked[0]
    new: Space = {}
    warnings: list[BoundaryWarning] = []
    for name, param in space.items():
        if isinstance(param, Categorical):
            seen = {_key(p[name]) for p in top if name in p}
            kept = tuple(c for c in param.choices if _key(c) in seen) or param.active
            new[name] = replace(param, kept=None if kept == param.choices else kept)
            continue
        values = [p[name] for p in top if name in p]
        if not values or param.high == param.low:
            new[name] = param
            continue
        side = _edge_side(param, best[name], settings.edge) if name in best else None
        warning = _warning(name, param, best[name], side) if side else None
        if warning:
            warnings.append(warning)
        new[name] = _narrow_numeric(
            param,
            original.get(name, param),
            values,
            settings,
            widen=side if settings.widen else None,
        )
    return new, warnings


def _edge_side(param: Float | Int, best: float, edge: float) -> str | None:
    low, high, at = param.axis(param.low), param.axis(param.high), param.axis(best)
    span = high - low
    limit_low, limit_high = _axis_limits(param)
    if at - low <= edge * span and low > limit_low:
        return "low"
    if high - at <= edge * span and high < limit_high:
        return "high"
    return None


def _warning(name: str, param: Float | Int, best: float, side: str) -> BoundaryWarning:
    widened = _widened(param, side)
    suggestion = widened.low if side == "low" else widened.high
    return BoundaryWarning(name, side, best, param.low, param.high, param.log, suggestion)


def _axis_limits(param: Float | Int) -> tuple[float, float]:
    low, high = param.limits
    if param.log:
        low = math.log10(low) if low > 0 else -math.inf
        high = math.log10(high) if high > 0 else -math.inf
    return low, high


def _widened(param: Float | Int, side: str) -> Float | Int:
    """`param` with `side` moved out by WIDEN_FRACTION of its span, within its limits (half
    way to an open limit, which no value may reach)."""
    low, high = param.axis(param.low), param.axis(param.high)
    step = WIDEN_FRACTION * (high - low)
    limit_low, limit_high = _axis_limits(param)
    open_low, open_high = param.open_limits
    if side == "low":
        target = low - step
        if target <= limit_low:
            target = (low + limit_low) / 2 if open_low else limit_low
        low = target
    else:
        target = high + step
        if target >= limit_high:
            target = (high + limit_high) / 2 if open_high else limit_high
        high = target
    return _make(param, low, high)


def _narrow_numeric(
    param: Float | Int,
    original: Param,
    values: Sequence[float],
    settings: Narrowing,
    widen: str | None,
) -> Float | Int:
    low, high = param.axis(param.low), param.axis(param.high)
    pad = settings.pad * (high - low)
    # Clip to the original range, or to where an earlier stage already widened it.
    clip_low = min(low, param.axis(original.low)) if isinstance(original, Float | Int) else low
    clip_high = max(high, param.axis(original.high)) if isinstance(original, Float | Int) else high
    axis_values = [param.axis(v) for v in values]
    new_low = max(min(axis_values) - pad, clip_low)
    new_high = min(max(axis_values) + pad, clip_high)
    if widen:
        widened = _widened(param, widen)
        if widen == "low":
            new_low = param.axis(widened.low)
        else:
            new_high = param.axis(widened.high)
    return _make(param, new_low, new_high)


def _make(param: Float | Int, low: float, high: float) -> Float | Int:
    """A range like `param` with new axis bounds, inside its limits; integers round outwards
    (with a tolerance: 10 ** log10(100) may come back as 100.00000000001)."""
    limit_low, limit_high = param.limits
    low_value = max(param.value(low), limit_low)
    high_value = min(param.value(high), limit_high)
    if isinstance(param, Int):
        low_int = math.floor(low_value + 1e-9)
        high_int = math.ceil(high_value - 1e-9)
        low_int = low_int if within(low_int, param.limits, param.open_limits) else low_int + 1
        high_int = high_int if within(high_int, param.limits, param.open_limits) else high_int - 1
        return replace(param, low=low_int, high=max(high_int, low_int))
    return replace(param, low=low_value, high=high_value)


def _key(value: Any) -> tuple:
    """Compare categorical values by type and value (True is not 1 here)."""
    return (type(value).__name__, value)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- parsing and serialising -------------------------------------------------------------


def parse_space(raw: Mapping[str, Any]) -> Space:
    """A space from plain data (a config's [space] table, or Python literals):

    - `{low = 1e-6, high = 10}` (`log` optional: on by default for lr and weight_decay),
      a range of integers when both bounds are integers, or `type = "int"`/`"float"`;
    - `[a, b, c]`: a categorical choice;
    - a `Float`/`Int`/`Categorical` passes through.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the search space must be a table of name = range, got {raw!r}")
    if not raw:
        raise ConfigError("the search space is empty: give at least one range, e.g. lr")
    return {str(name): _parse_param(str(name), spec) for name, spec in raw.items()}


_RANGE_KEYS = {"low", "high", "log", "type"}


def _parse_param(name: str, spec: Any) -> Param:
    if isinstance(spec, Float | Int | Categorical):
        _check_param(name, spec)
        return spec
    if isinstance(spec, list | tuple):
        if not spec:
            raise ConfigError(f"{name}: a categorical needs at least one value, got []")
        for value in spec:
            if not isinstance(value, str | int | float | bool) and value is not None:
                raise ConfigError(
                    f"{name}: categorical values must be strings, numbers or booleans, "
                    f"got {value!r}"
                )
        if len({_key(v) for v in spec}) != len(spec):
            raise ConfigError(f"{name}: categorical values must be distinct, got {list(spec)}")
        return Categorical(tuple(spec))
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{name}: expected a range such as {{low = 1e-4, high = 1e-1}} or a list of "
            f"choices, got {spec!r}"
        )
    unknown = set(spec) - _RANGE_KEYS
    if unknown:
        raise ConfigError(
            f"{name}: unknown key {sorted(unknown)[0]!r} in its range; use low, high, log, type"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{name}: a range needs both low and high, got {dict(spec)}")
    low, high = spec["low"], spec["high"]
    for bound in (low, high):
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise ConfigError(f"{name}: range bounds must be finite numbers, got {bound!r}")
    log = spec.get("log", name in LOG_BY_DEFAULT)
    if not isinstance(log, bool):
        raise ConfigError(f"{name}: log must be true or false, got {log!r}")
    kind = spec.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind == "int":
        if int(low) != low or int(high) != high:
            raise ConfigError(f"{name}: an int range needs integer bounds, got [{low}, {high}]")
        param: Param = Int(int(low), int(high), log=log)
    elif kind == "float":
        param = Float(float(low), float(high), log=log)
    else:
        raise ConfigError(f"{name}: type must be 'int' or 'float', got {kind!r}")
    _check_param(name, param)
    return param


def _check_param(name: str, param: Param) -> None:
    if isinstance(param, Categorical):
        return
    if not param.low < param.high:
        raise ConfigError(
            f"{name}: the range needs low < high, got low = {param.low}, high = {param.high}"
        )
    if param.log and param.low <= 0:
        raise ConfigError(
            f"{name}: a log-scale range needs positive bounds, got low = {param.low}; "
            f"use e.g. low = 1e-6, or log = false"
        )
    for bound in (param.low, param.high):
        if not within(bound, param.limits, param.open_limits):
            raise ConfigError(
                f"{name}: the range [{param.low}, {param.high}] leaves the allowed "
                f"{describe_limits(param.limits, param.open_limits)}"
            )


def within(value: float, limits: tuple[float, float], open_limits=(False, False)) -> bool:
    """Whether `value` lies inside the limits (an open side excludes the limit itself)."""
    low, high = limits
    above = value > low if open_limits[0] else value >= low
    below = value < high if open_limits[1] else value <= high
    return above and below


def describe_limits(limits: tuple[float, float], open_limits=(False, False)) -> str:
    return (
        f"{'(' if open_limits[0] else '['}{_fmt(float(limits[0]))}, "
        f"{_fmt(float(limits[1]))}{')' if open_limits[1] else ']'}"
    )


def with_limits(
    space: Space, limits: Mapping[str, tuple[tuple[float, float], tuple[bool, bool]]]
) -> Space:
    """The space with each numeric parameter's hard limits (and which of them are open) set,
    checked against its range."""
    result: Space = {}
    for name, param in space.items():
        if isinstance(param, Float | Int) and name in limits:
            bounds, open_limits = limits[name]
            param = replace(param, limits=tuple(bounds), open_limits=tuple(open_limits))
            _check_param(name, param)
        result[name] = param
    return result


def space_to_json(space: Mapping[str, Param]) -> dict[str, Any]:
    """Plain data (for study attributes and search.json); `space_from_json` reads it back."""
    result: dict[str, Any] = {}
    for name, param in space.items():
        if isinstance(param, Categorical):
            result[name] = {"type": "categorical", "choices": list(param.choices)}
            if param.kept is not None:
                result[name]["kept"] = list(param.kept)
        else:
            result[name] = {
                "type": "int" if isinstance(param, Int) else "float",
                "low": param.low,
                "high": param.high,
                "log": param.log,
            }
            if param.limits != (-math.inf, math.inf):
                result[name]["limits"] = [_finite_or_none(v) for v in param.limits]
                result[name]["open_limits"] = list(param.open_limits)
    return result


def space_from_json(data: Mapping[str, Any]) -> Space:
    space: Space = {}
    for name, item in data.items():
        if item["type"] == "categorical":
            kept = item.get("kept")
            space[name] = Categorical(tuple(item["choices"]), None if kept is None else tuple(kept))
            continue
        limits = tuple(
            (-math.inf, math.inf)[i] if v is None else v
            for i, v in enumerate(item.get("limits", [None, None]))
        )
        cls = Int if item["type"] == "int" else Float
        open_limits = tuple(item.get("open_limits", [False, False]))
        space[name] = cls(item["low"], item["high"], item["log"], limits, open_limits)
    return space


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
