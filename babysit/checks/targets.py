"""The targets against the loss: regression targets far from unit scale (TARGETS_NOT_SCALED),
and output and target shapes that only match by broadcasting (SHAPE_BROADCAST).

Two pure steps, as everywhere in the checks: `measure_targets(output, y, task)` takes the
numbers, `check_targets(measurement)` decides. See docs/checkup.md.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from babysit.checks.findings import Finding
from babysit.checks.task import Task, broadcast_shape, target_scale

__all__ = [
    "TARGET_SCALE_MAX",
    "TARGET_SCALE_MIN",
    "check_shape_broadcast",
    "check_target_scale",
    "check_targets",
    "measure_targets",
]

# A network initialised for unit-scale inputs (He/Xavier, CS231n Lecture 6) outputs values of
# order 1; regression targets of rms far above that must be reached by growing the last
# layer's weights and bias by the same factor, and the MSE gradient grows with the target, so
# a learning rate tuned for one scale is wrong for another. Standardizing the targets is the
# regression twin of the lecture's "zero-center and normalize the data". Our measurement (the
# zoo's regression MLP, 8-64-64-1 He, 300 steps of 64, MSE / var(y) at the end): SGD 1e-2
# 0.039 / 0.006 / NaN / NaN at target scale 1 / 10 / 100 / 1000; Adam 1e-3 0.016 / 0.010 /
# 0.015 / 0.338. So flagged above rms 10. The lower bound is our choice: below 0.01 the
# gradients are 100x smaller than at unit scale, the mirror image.
TARGET_SCALE_MAX = 10.0
TARGET_SCALE_MIN = 0.01


def measure_targets(output: Tensor, y: Tensor, task: Task) -> dict[str, Any]:
    """What the target checks need: the shapes, the shape they broadcast to under an
    elementwise loss (None when they agree), and, for regression on real targets, the
    targets' scale (`target_scale`)."""
    measurement: dict[str, Any] = {
        "loss": task.name,
        "kind": task.kind,
        "output_shape": list(output.shape),
        "target_shape": list(y.shape),
        "broadcast_shape": None,
    }
    shape = broadcast_shape(output, y, task)
    if shape is not None:
        measurement["broadcast_shape"] = list(shape)
    if task.kind == "regression" and y.is_floating_point():
        measurement["scale"] = target_scale(y)
    return measurement


def check_shape_broadcast(measurement: dict[str, Any]) -> list[Finding]:
    """SHAPE_BROADCAST (error): an elementwise loss compares outputs and targets of different
    shapes through broadcasting, (N, 1) against (N,) becoming (N, N): every output is pulled
    towards the mean target and the model cannot fit. torch only warns, once."""
    shape = measurement.get("broadcast_shape")
    if shape is None:
        return []
    out, target = tuple(measurement["output_shape"]), tuple(measurement["target_shape"])
    return [
        Finding(
            "SHAPE_BROADCAST",
            "error",
            f"the model outputs {out} and the targets are {target}: {measurement['loss']} "
            f"broadcasts them to {tuple(shape)}, comparing every output with every target, so "
            f"the loss cannot fall below the targets' variance",
            f"make the shapes equal: y.view_as(output) (e.g. y.unsqueeze(1) for {out} outputs), "
            f"or output.squeeze(-1) for {target} targets",
            {"output_shape": list(out), "target_shape": list(target), "broadcast_shape": shape},
        )
    ]


def check_target_scale(measurement: dict[str, Any]) -> list[Finding]:
    """TARGETS_NOT_SCALED (warning): regression targets whose rms is more than
    TARGET_SCALE_MAX times unit scale (or below TARGET_SCALE_MIN)."""
    scale = measurement.get("scale")
    if not scale or not math.isfinite(scale.get("rms", math.nan)):
        return []
    rms = scale["rms"]
    if TARGET_SCALE_MIN <= rms <= TARGET_SCALE_MAX:
        return []
    way = "large" if rms > TARGET_SCALE_MAX else "small"
    return [
        Finding(
            "TARGETS_NOT_SCALED",
            "warning",
            f"the regression targets are far from unit scale: mean {scale['mean']:.3g}, std "
            f"{scale['std']:.3g}, rms {rms:.3g} (too {way}; allowed {TARGET_SCALE_MIN:g} to "
            f"{TARGET_SCALE_MAX:g}); a freshly initialised network outputs values of order 1, "
            f"and the {measurement['loss']} gradient scales with the targets",
            "standardize the targets: fit mean and std on the training targets, train on "
            "(y - mean) / std, and map predictions back with pred * std + mean",
            {**scale, "allowed": [TARGET_SCALE_MIN, TARGET_SCALE_MAX]},
        )
    ]


def check_targets(measurement: dict[str, Any]) -> list[Finding]:
    """Both target checks on one `measure_targets` measurement. A broadcast mismatch comes
    first: it makes any scale judgement moot."""
    broadcast = check_shape_broadcast(measurement)
    return broadcast + check_target_scale(measurement)
