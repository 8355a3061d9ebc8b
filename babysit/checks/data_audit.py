"""The data audit: non-finite inputs, targets the loss cannot use, and inputs far from zero
mean and unit scale as the first weight layer sees them. The thresholds come from the CS231n
notes where they give one, otherwise from our calibration grid (tests/checks/
test_calibration.py; figures in docs/checkup.md)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Found, fmt
from babysit.checks.findings import Finding
from babysit.checks.task import Task
from babysit.data.batches import Inputs, finite_examples, integer_inputs, main_input
from babysit.probes.trace import Trace

__all__ = ["CENTERING_RATIO_MAX", "SCALE_MAX", "SCALE_MIN", "audit_data", "input_statistics"]

# --- data ---------------------------------------------------------------------------------
# Un-centred inputs: the rms of the per-feature means over the rms of the per-feature stds.
# Above 0.5 the constant offset carries more than a quarter of the input's energy, and the
# first layer's weight gradients share its sign (the zig-zag of CS231n Lecture 6).
# Measured: standardized digits 0.00 (train) / 0.08 (val), synthetic data < 0.1, per-channel
# or mean-image centred data < 0.1; raw digits (0..16) 1.48, the same /16 or x255 1.48.
CENTERING_RATIO_MAX = 0.5
# Input scale: the rms of the per-feature stds of the features that vary. The init schemes
# (Xavier, He) assume unit-variance inputs; logits and the first loss grow with the input
# scale. Measured: standardized digits 0.97 (train) / 1.13 (val); digits in [0, 1] 0.27
# (left alone: pixels in [0, 1] train well); raw digits (0..16) 4.3; raw 0..255 pixels 69.
SCALE_MAX = 3.0
SCALE_MIN = 0.1


def input_statistics(features: Tensor) -> dict[str, Any]:
    """Per-feature mean and std of a batch of inputs (N, ...), summarised: rms of the means,
    rms of the stds of the features that vary, their ratio, the value range; per channel too
    for image batches (N, C, H, W)."""
    f = features.detach().flatten(1).double()
    mean, std = f.mean(0), f.std(0) if len(f) > 1 else torch.zeros(f.shape[1], dtype=f.dtype)
    varying = std > 0
    rms_mean = float(mean.square().mean().sqrt())
    rms_std = float(std[varying].square().mean().sqrt()) if bool(varying.any()) else 0.0
    stats: dict[str, Any] = {
        "features": int(f.shape[1]),
        "constant_features": int((~varying).sum()),
        "mean_rms": rms_mean,
        "std_rms": rms_std,
        "offset_ratio": rms_mean / rms_std if rms_std > 0 else (math.inf if rms_mean else 0.0),
        "min": float(f.min()),
        "max": float(f.max()),
    }
    if features.dim() == 4:
        channels = features.detach().transpose(0, 1).flatten(1).double()
        stats["channel_mean"] = channels.mean(1).tolist()
        stats["channel_std"] = channels.std(1).tolist()
    return stats


def _label_findings(output: Tensor, y: Tensor, task: Task) -> list[Finding]:
    """LABELS_INVALID for targets the loss cannot use."""
    soft = y.is_floating_point() and y.shape[1:] == output.shape[1:]
    if task.class_labels and not soft:
        if output.dim() > 1 and output.dim() != y.dim() + 1:
            return []  # e.g. (N, 1, C) scores for (N,) labels: the shapes, not the labels
        # The vocabulary for per-position scores, in either layout ((B, T, V) too).
        # `output` is the model's on the first examples only; `y` may be the whole data's.
        head = y[: len(output)] if output.dim() > 0 else y
        classes = task.classes(output, head) if not y.is_floating_point() else None
        if classes is None:
            classes = output.shape[1] if output.dim() > 1 else 1
        if y.is_floating_point():
            integral = torch.isfinite(y) & (y == y.round())
            if not bool(integral.all()):
                bad = (~integral).nonzero()[0].tolist()
                return [
                    Finding(
                        "LABELS_INVALID",
                        "error",
                        f"{int((~integral).sum())} of {y.numel()} labels are not integers "
                        f"(first at {bad}: {y[tuple(bad)].item()!r}); {task.name} takes class "
                        f"indices 0..{classes - 1}",
                        "map the labels to integer class indices 0..C-1 (y.long() after "
                        "checking), or use a regression loss for real-valued targets",
                        {"non_integer": int((~integral).sum()), "classes": classes},
                    )
                ]
        labels = y.long()
        valid = (labels >= 0) & (labels < classes)
        if task.ignore_index is not None:
            valid |= labels == task.ignore_index
        if not bool(valid.all()):
            bad = labels[~valid]
            considered = (
                labels if task.ignore_index is None else labels[labels != task.ignore_index]
            )
            low, high = int(considered.min()), int(considered.max())
            return [
                Finding(
                    "LABELS_INVALID",
                    "error",
                    f"{int((~valid).sum())} of {labels.numel()} labels lie outside [0, "
                    f"{classes}) (seen {low}..{high}, e.g. {int(bad[0])}), but the model has "
                    f"{classes} outputs",
                    f"give the model {max(high + 1, classes)} outputs, or map the labels to "
                    f"0..{classes - 1}",
                    {"outside": int((~valid).sum()), "classes": classes, "min": low, "max": high},
                )
            ]
        return []
    if task.kind in ("bce", "bce_logits") or (task.class_labels and soft):
        finite = torch.isfinite(y)
        inside = finite & (y >= 0) & (y <= 1)
        if not bool(inside.all()):
            seen = y[finite]
            span = f"{float(seen.min()):g}..{float(seen.max()):g}" if seen.numel() else "none"
            return [
                Finding(
                    "LABELS_INVALID",
                    "error",
                    f"{int((~inside).sum())} of {y.numel()} targets lie outside [0, 1] or are "
                    f"not finite (seen {span}); {task.name} takes probabilities",
                    "for C classes use CrossEntropyLoss with class indices; for BCE, pass "
                    "0/1 targets (one-hot for several outputs)",
                    {"outside": int((~inside).sum())},
                )
            ]
        if task.class_labels:  # soft labels for cross-entropy: rows must be distributions
            sums = y.sum(dim=1)
            if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
                return [
                    Finding(
                        "LABELS_INVALID",
                        "error",
                        f"soft targets for {task.name} must sum to 1 over the classes; row sums "
                        f"range {float(sums.min()):.3g}..{float(sums.max()):.3g}",
                        "normalise each target row to a probability distribution, or pass "
                        "class indices",
                        {"row_sum_min": float(sums.min()), "row_sum_max": float(sums.max())},
                    )
                ]
        return []
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        return [
            Finding(
                "LABELS_INVALID",
                "error",
                f"{int((~torch.isfinite(y)).sum())} of {y.numel()} targets are NaN or inf",
                "drop or impute the examples with non-finite targets",
                {"nonfinite": int((~torch.isfinite(y)).sum())},
            )
        ]
    return []


def _normalized_after_first_layer(trace: Trace | None) -> str | None:
    """The name of a BatchNorm right after the first weight layer: with it, the input's mean
    and scale cancel out of the forward pass and of the first layer's gradient."""
    if trace is None:
        return None
    weights = trace.weight_calls()
    if not weights:
        return None
    consumers = [trace.calls[i] for i in trace.consumers.get(weights[0].index, [])]
    for call in consumers:
        if isinstance(call.module, nn.modules.batchnorm._BatchNorm):
            return call.name
    return None



def _nonfinite_findings(
    data: Tensor, finite_rows: Tensor | None, index: Tensor | None
) -> list[Finding]:
    """DATA_NONFINITE when some examples hold NaN or inf; `index` maps rows of a drawn
    sample back to the data set's indices."""
    if finite_rows is None or bool(finite_rows.all()):
        return []
    bad_values = int((~torch.isfinite(data)).sum())
    bad_rows = (~finite_rows).nonzero().flatten()
    if index is not None:
        bad_rows = index[bad_rows.cpu()].sort().values
    nan = int(torch.isnan(data).sum())
    sample = " in the sample checked" if index is not None else ""
    return [
        Finding(
            "DATA_NONFINITE",
            "error",
            f"{bad_values} input values are NaN or inf ({nan} NaN) in {len(bad_rows)} of "
            f"{len(data)} examples{sample} (first at example {int(bad_rows[0])}); a single NaN "
            f"input makes the loss NaN",
            "drop or impute those examples before training (e.g. "
            "x[torch.isfinite(x).flatten(1).all(1)])",
            {"values": bad_values, "nan": nan, "examples": len(bad_rows), "of": len(data)},
        )
    ]


def _features(
    data: Tensor, finite_rows: Tensor | None, trace: Trace | None
) -> tuple[Tensor, bool]:
    """(features, whether the first weight layer reads them): the data as the first weight
    layer reads it when that layer reads the data (the same values per example, maybe
    reshaped or normalized by the model itself); never an internal feature of another size
    (a LayerNorm output deep inside, an LSTM's state), else the finite rows of the data."""
    features = trace.first_weight_input if trace is not None else None
    reads_data = (
        features is not None
        and features.shape[0] >= 2
        and features.dim() >= 1
        and features[0].numel() == data[0].numel()
    )
    if not reads_data:
        features = data[finite_rows] if finite_rows is not None else data.float()
    return features.float(), reads_data

def audit_data(
    x: Inputs,
    y: Tensor,
    task: Task,
    output: Tensor,
    trace: Trace | None = None,
    index: Tensor | None = None,
) -> tuple[list[Finding], dict[str, Any]]:
    """Non-finite inputs, targets the loss cannot use, and inputs far from zero mean and unit
    scale as the network's first weight layer sees them (after any normalization the model
    does itself). `output` is the model's output on a few examples, for the class count;
    `index` maps rows of a drawn sample back to the data set's indices."""
    data = main_input(x)
    finite_rows = finite_examples(x)
    findings = _nonfinite_findings(data, finite_rows, index)
    findings += _label_findings(output, y, task)
    if integer_inputs(x):
        # Token ids and categories are indices: their mean and scale mean nothing.
        return findings, {"integer_inputs": True, "dtype": str(data.dtype).removeprefix("torch.")}

    features, reads_data = _features(data, finite_rows, trace)
    stats = input_statistics(features) if len(features) > 1 else {}
    first = trace.weight_calls() if trace is not None else []
    stats["seen_by"] = first[0].name if reads_data and first else None
    if not stats or not features.is_floating_point():
        return findings, stats

    normalizer = _normalized_after_first_layer(trace)
    severity = "info" if normalizer else "warning"
    softened = (
        f"; {normalizer} normalizes right after the first layer, so this matters less"
        if normalizer
        else ""
    )
    layer = stats["seen_by"]
    image = features.dim() == 4
    fix_center = (
        "fit babysit.data.preprocess.PerChannelMean (VGG) or MeanImage (AlexNet) on the "
        "training images and apply it to every split (CLI: --preprocess per_channel_mean)"
        if image
        else "fit babysit.data.preprocess.Standardize on the training set and apply it to "
        "every split (CLI: --preprocess standardize)"
    )
    span = f"values range {stats['min']:.3g}..{stats['max']:.3g}"
    if stats["offset_ratio"] > CENTERING_RATIO_MAX:
        findings.append(
            Finding(
                "DATA_NOT_CENTERED",
                severity,
                f"inputs are not zero-centred: per-feature means have rms {stats['mean_rms']:.3g}"
                f" against a spread (rms std) of {stats['std_rms']:.3g}, ratio "
                f"{stats['offset_ratio']:.2f} > {CENTERING_RATIO_MAX} ({span}){softened}",
                fix_center,
                {
                    "offset_ratio": stats["offset_ratio"],
                    "mean_rms": stats["mean_rms"],
                    "std_rms": stats["std_rms"],
                    "threshold": CENTERING_RATIO_MAX,
                },
                layer,
            )
        )
    scale = stats["std_rms"]
    if scale > SCALE_MAX or 0 < scale < SCALE_MIN:
        direction = "large" if scale > SCALE_MAX else "small"
        findings.append(
            Finding(
                "DATA_NOT_SCALED",
                severity,
                f"input scale is too {direction}: the features' rms std is {scale:.3g}, "
                f"expected about 1 (between {SCALE_MIN} and {SCALE_MAX}) for Xavier/He init "
                f"({span}){softened}",
                "fit babysit.data.preprocess.Standardize on the training set and apply it to "
                "every split (CLI: --preprocess standardize)"
                + ("; or divide raw pixels by 255 and subtract the mean" if image else ""),
                {"std_rms": scale, "range": [SCALE_MIN, SCALE_MAX]},
                layer,
            )
        )
    return findings, stats


class DataAudit(Check):
    """NaN inputs, labels the loss cannot use, un-centred or un-scaled inputs. NaN and label
    audits see every example when the data is in memory, so that counts and indices are the
    user's; otherwise the drawn sample, with indices mapped back."""

    name = "data audit"
    key = "data"
    title = "data audit"
    gate = True
    codes = {
        "DATA_NONFINITE": "error",
        "LABELS_INVALID": "error",
        "DATA_NOT_CENTERED": "warning or info",
        "DATA_NOT_SCALED": "warning or info",
    }

    def run(self, context: Context) -> Found:
        if context.trace is None:
            n = len(context.sample_y)
            return [
                Finding(
                    "DATA_NONFINITE",
                    "error",
                    f"every one of the {n} examples drawn has NaN or inf inputs",
                    "clean the data: drop or impute non-finite values",
                    {"examples": n},
                )
            ], None
        whole = context.whole
        x, y = whole if whole is not None else (context.sample_x, context.sample_y)
        index = None if whole is not None else context.index
        found, measurement = audit_data(
            x, y, context.task, context.trace.output, context.trace, index
        )
        measurement["model_audits_on"] = "the inputs as given"
        return found, measurement

    def describe(self, measurements: dict[str, Any]) -> str | None:
        d = measurements.get("data")
        if d and d.get("integer_inputs"):
            return f"{d.get('dtype', 'integer')} inputs (indices): not judged for centring or scale"
        if not d or "offset_ratio" not in d:
            return None
        return (
            f"mean/spread ratio {fmt(d['offset_ratio'], '.2f')} (<= 0.5); feature std "
            f"{fmt(d['std_rms'])} (0.1..3); values {fmt(d.get('min'))}..{fmt(d.get('max'))}"
        )
