"""The targets against the loss, before anything trains: output and target shapes that
match only by broadcasting (an error that makes the training checks step aside), and
regression targets far from unit scale (babysit.checks.targets measures and decides)."""

from __future__ import annotations

from typing import Any

from babysit.checks.base import Check, Context, Found
from babysit.checks.targets import check_targets, measure_targets

__all__ = ["TargetAudit"]


class TargetAudit(Check):
    """SHAPE_BROADCAST and TARGETS_NOT_SCALED on the audit batch; shown in the data row."""

    name = "target audit"
    key = "targets"
    row = "data"
    gate = True
    codes = {"SHAPE_BROADCAST": "error", "TARGETS_NOT_SCALED": "warning"}

    def run(self, context: Context) -> Found:
        measurement: dict[str, Any] = measure_targets(
            context.trace.output, context.batch_y, context.task
        )
        return check_targets(measurement), measurement
