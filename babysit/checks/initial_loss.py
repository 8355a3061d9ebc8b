"""The CS231n sanity check of the first loss: with small weights a C-class softmax starts at
ln(C); for a regression loss, outputs on the targets' scale."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Found, fmt
from babysit.checks.findings import Finding
from babysit.checks.task import Task, class_dim
from babysit.data.batches import Inputs
from babysit.probes import preserved
from babysit.probes.nonfinite import first_nonfinite_layer

__all__ = ["INIT_LOSS_RATIO_MAX", "OUTPUT_SCALE_MAX", "InitialLossCheck", "check_initial_loss"]

# --- initial loss -------------------------------------------------------------------------
# CS231n notes (Part 3): with small weights the first loss of a C-class softmax is ln(C)
# (2.302 for 10 classes); our reference is the loss of an uninformed output (zero logits),
# which is ln(C) for cross-entropy, ln(2) for BCE. Flagged when the first loss is more than
# this factor above (or below) it. Measured on the calibration grid: healthy MLPs and CNNs
# 1.00-1.35x (He's last layer gives logits of std ~0.7), PCA-whitened inputs 1.5x, a He CNN
# with max-pooling on 3x16x16 inputs 1.8x; faulty: a last layer 20x too large 14x, N(0, 1)
# init 6x to 1e4x, raw 0..16 digits into a He MLP 4-6x.
INIT_LOSS_RATIO_MAX = 2.5
# Regression (MSE, L1, Huber) has no ln(C): there we compare the outputs' rms at init with the
# targets' rms. Outputs more than this many times larger than the targets are flagged (our
# choice: MSE at init is then > 26x that of predicting 0). Measured: He MLPs give 0.5-2.2x
# (MSE on one-hot targets 2.2x), a last layer 20x too large 44x.
OUTPUT_SCALE_MAX = 5.0


def _nan_loss(
    model: nn.Module, x: Inputs, task: Task, loss: float, note: str, measurement: dict[str, Any]
) -> Finding:
    """NAN_LOSS at init, naming the first layer whose output is non-finite."""
    where = first_nonfinite_layer(model, x, task.forward)
    measurement["nonfinite_layer"] = where
    at = (
        f"; the first layer whose output is non-finite is {where['layer']} ({where['kind']}"
        + (", whose parameters hold NaN/inf)" if where["nonfinite_parameters"] else ")")
        if where is not None
        else "; every layer's output is finite, so the loss function produced it"
    )
    return Finding(
        "NAN_LOSS",
        "error",
        f"the loss is {loss} at init on finite inputs{note}: the model or the loss "
        f"computes NaN/inf before any training{at}",
        "look for log of 0, division by 0 or sqrt of a negative number in forward or "
        "in the loss, and for layers whose outputs overflow",
        measurement,
        where["layer"] if where is not None else None,
    )


def check_initial_loss(
    model: nn.Module, x: Inputs, y: Tensor, task: Task, input_note: str = ""
) -> tuple[list[Finding], dict[str, Any]]:
    """The first loss (training mode, no update) against the loss of an uninformed output:
    ln(C) for C-class cross-entropy."""
    with preserved(model), torch.no_grad():
        model.train()
        output = task.output(model, x)
        loss = float(task.loss(output, y))
        expected = task.expected_initial_loss(output, y)  # ln(V) per position too
    dim = class_dim(output, y) if task.class_labels else None
    dim = dim if dim is not None else 1
    classes = output.shape[dim] if output.dim() > 1 else 1
    spread = float(output.float().std(dim=dim).mean()) if output.dim() > 1 and classes > 1 else None
    measurement = {"loss": loss, "expected": expected, "classes": classes, "logit_std": spread}
    if task.kind == "regression" and y.is_floating_point():
        measurement["output_rms"] = float(output.float().square().mean().sqrt())
        measurement["target_rms"] = float(y.float().square().mean().sqrt())
    note = f" ({input_note})" if input_note else ""
    if not math.isfinite(loss):
        return [_nan_loss(model, x, task, loss, note, measurement)], measurement
    if expected is None or not math.isfinite(expected) or expected <= 0:
        measurement["skipped"] = f"no reference initial loss for {task.name}"
        return [], measurement
    ratio = loss / expected
    measurement["ratio"] = ratio
    regression = task.kind == "regression"
    if regression:
        scale = measurement.get("output_rms", 0.0) / max(measurement.get("target_rms", 0.0), 1e-12)
        measurement["output_scale"] = scale
        too_high, too_low, limit = scale > OUTPUT_SCALE_MAX, False, OUTPUT_SCALE_MAX
    else:
        limit = INIT_LOSS_RATIO_MAX
        too_high, too_low = ratio > limit, ratio < 1 / limit
    if not (too_high or too_low):
        return [], measurement
    if task.kind == "cross_entropy" and not (y.is_floating_point()):
        per = " per position" if task.per_position(output, y) else ""
        reference = f"ln({classes}) = {expected:.3f} for {classes} classes{per}"
    elif task.kind in ("bce", "bce_logits"):
        reference = f"ln(2) = {expected:.3f} for BCE"
    else:
        reference = f"{expected:.3f}, the loss of an uninformed output"
    if regression:
        return [
            Finding(
                "INIT_LOSS_MISMATCH",
                "warning",
                f"the outputs at init are {measurement['output_scale']:.3g}x larger than the "
                f"targets (rms {measurement['output_rms']:.3g} vs {measurement['target_rms']:.3g}"
                f", limit {OUTPUT_SCALE_MAX:g}x){note}: the first loss is {loss:.3g}, "
                f"{ratio:.3g}x that of predicting 0",
                "scale the last layer's weights down at init (e.g. std 0.01), or standardize "
                "the targets",
                {**measurement, "limit": OUTPUT_SCALE_MAX},
            )
        ], measurement
    if too_high:
        cause = (
            f"the outputs are too large at init (std across classes {spread:.3g})"
            if spread is not None
            else "the outputs are too large at init"
        )
        fix = (
            "scale the last layer's weights down at init (e.g. std 0.01, or "
            "torch.nn.init.zeros_ on its bias and a small normal on its weight); check that "
            "the inputs are preprocessed and that the loss averages over the batch"
        )
    else:
        cause = "the loss starts below what an uninformed model can reach"
        fix = "check the loss function and its inputs (targets and outputs swapped? reduction?)"
    return [
        Finding(
            "INIT_LOSS_MISMATCH",
            "warning",
            f"initial loss {loss:.3f} is {ratio:.2f}x the expected {reference}{note} "
            f"(limit {limit:g}x): {cause}",
            fix,
            {**measurement, "limit": limit},
            None,
        )
    ], measurement


class InitialLossCheck(Check):
    """The first loss against the loss of an uninformed output. When the model audits run
    on standardized inputs, the first loss with the raw inputs is measured too, and added to
    the data finding that flagged them (the scale one when both are: scale is what inflates
    the logits)."""

    name = "initial loss"
    key = "initial_loss"
    title = "initial loss"
    codes = {"INIT_LOSS_MISMATCH": "warning", "NAN_LOSS": "error"}

    def skip(self, context: Context) -> str | None:
        return context.blocked()

    def run(self, context: Context) -> Found:
        audit_x, note = context.audit_inputs()
        task, model, y = context.task, context.model, context.batch_y
        found, measurement = check_initial_loss(model, audit_x, y, task, note)
        if note:
            _, raw = check_initial_loss(model, context.batch, y, task)
            measurement["as_given"] = raw
            self._annotate_data_finding(context, raw)
        return found, measurement

    @staticmethod
    def _annotate_data_finding(context: Context, raw: dict[str, Any]) -> None:
        expected, loss = raw.get("expected"), raw.get("loss")
        if expected is None or loss is None or not math.isfinite(loss):
            return
        flagged = [
            f
            for code in ("DATA_NOT_SCALED", "DATA_NOT_CENTERED")
            for f in context.raised(code, severity="warning")
        ]
        if flagged:
            f = flagged[0]
            context.amend(
                f,
                message=f"{f.message}; with these inputs the first loss is {loss:.3g} "
                f"(expected {expected:.3g})",
                evidence={**f.evidence, "initial_loss_as_given": loss, "expected": expected},
            )

    needs = "loss"

    def reads(self, i: dict[str, Any]) -> str:
        if i.get("output_scale") is not None:
            return f"outputs {fmt(i['output_scale'])}x the targets' rms (<= 5x)"
        if i.get("expected") is None:
            return f"{fmt(i['loss'])} (no reference for this loss)"
        return f"{fmt(i['loss'])} (uninformed {fmt(i['expected'])}, ratio within 2.5x)"
