"""A search's plan: everything every worker and every resumed run must agree on (space,
stages, narrowing, seed, loss rule, objective settings). It is stored in the study, so that
a worker or `--resume` with a different plan is refused instead of mixing two searches."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from babysit.errors import ConfigError
from babysit.search.space import Narrowing, Space, space_from_json, space_to_json
from babysit.search.stages import Stage
from babysit.train.callbacks import LOSS_ABORT_FACTOR

__all__ = ["MAX_TRIALS", "PLAN_ATTR", "Plan"]

PLAN_ATTR = "babysit:plan"  # study user attribute holding Plan.to_json()
# Every trial is queued when the study is created (~1 ms each on a local journal file) and
# each claim scans the queue: beyond this many a plan is surely a typo (a stage of 100000000
# trials would queue silently for hours).
MAX_TRIALS = 10_000
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Plan:
    space: Space
    stages: tuple[Stage, ...]
    narrowing: Narrowing = Narrowing()
    seed: int = 0
    loss_ratio: float = LOSS_ABORT_FACTOR
    direction: str = "maximize"
    metric: str = "val_accuracy"
    objective: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"direction must be maximize or minimize, got {self.direction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not (isinstance(self.loss_ratio, int | float) and self.loss_ratio > 1):
            raise ConfigError(f"loss_ratio must be a number > 1, got {self.loss_ratio!r}")
        if not math.isfinite(self.loss_ratio):
            raise ConfigError(f"loss_ratio must be finite, got {self.loss_ratio!r}")
        if self.total_trials > MAX_TRIALS:
            counts = " + ".join(str(s.trials) for s in self.stages)
            raise ConfigError(
                f"the stages ask for {self.total_trials} trials ({counts}), more than the "
                f"{MAX_TRIALS} a search queues; use fewer trials per stage"
            )

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def total_trials(self) -> int:
        return sum(s.trials for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return _normalised(
            {
                "space": space_to_json(self.space),
                "stages": [s.to_dict() for s in self.stages],
                "narrowing": self.narrowing.to_dict(),
                "seed": self.seed,
                "loss_ratio": self.loss_ratio,
                "direction": self.direction,
                "metric": self.metric,
                "objective": dict(self.objective),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            space=space_from_json(data["space"]),
            stages=tuple(Stage(**s) for s in data["stages"]),
            narrowing=Narrowing.from_dict(data["narrowing"]),
            seed=data["seed"],
            loss_ratio=data["loss_ratio"],
            direction=data["direction"],
            metric=data["metric"],
            objective=data.get("objective", {}),
        )

    def differences(self, stored: Mapping[str, Any]) -> list[str]:
        """The keys (e.g. "space.lr", "stages") where this plan differs from a stored one."""
        return _diff(self.to_json(), _normalised(stored))


def _normalised(data: Any) -> Any:
    """JSON round trip: tuples become lists, so that a plan compares equal to its stored copy."""
    return json.loads(json.dumps(data, sort_keys=True))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping) and prefix.count(".") < 2:
        keys = sorted(set(a) | set(b))
        found: list[str] = []
        for key in keys:
            found += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def describe_differences(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
