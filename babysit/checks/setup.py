"""Audits of the set-up before any training: the data, the architecture and the init.

Each audit turns measurements (a forward trace, per-layer statistics from the probes) into
Findings with the numbers and a fix. The thresholds below come from the CS231n notes where
they give one, and otherwise from our calibration grid of healthy and faulty set-ups
(tests/checks/test_calibration.py; figures in docs/checkup.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.findings import Finding
from babysit.checks.task import Task
from babysit.checks.trace import LINEAR_PASS_THROUGH, NORMALIZATION, Trace
from babysit.nn.init import WEIGHT_LAYERS
from babysit.probes import LayerStats

__all__ = [
    "CENTERING_RATIO_MAX",
    "DEAD_FRACTION_MAX",
    "INIT_DEPTH_MIN_LAYERS",
    "INIT_GRADIENT_CHANGE_MAX",
    "INIT_SCALE_CHANGE_MAX",
    "NO_NORMALIZATION_MIN_LAYERS",
    "SATURATED_FRACTION_MAX",
    "SCALE_MAX",
    "SCALE_MIN",
    "audit_architecture",
    "audit_data",
    "audit_init",
    "input_statistics",
]

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

# --- architecture -------------------------------------------------------------------------
# Ioffe & Szegedy (2015) and the lecture motivate BatchNorm by deep nets; from this many
# weight layers on, a net without any normalization layer gets an info finding.
NO_NORMALIZATION_MIN_LAYERS = 6

# --- init ---------------------------------------------------------------------------------
# Depth starts here: the lecture's small-init and Xavier-under-ReLU collapses are about deep
# nets, and it calls W = 0.01 * randn fine for small ones (its 2-layer net trains with it).
INIT_DEPTH_MIN_LAYERS = 3
# Forward: the std of the hidden activations may change by at most this factor from the first
# hidden layer to the last. Measured on digits (standardized) with 3..10 hidden layers:
# He/ReLU, Leaky, ELU, orthogonal 0.8-1.3x; Xavier/tanh 0.38x at 10 layers; torch's default
# init with 3 layers 0.2x; CNNs 0.25-1.2x. Faulty: 0.01 * randn 1e-3x at 3 layers and below;
# N(0, 1) on ReLU 50x at 3 layers; Xavier under 10 ReLU layers 0.05x (the lecture's collapse).
INIT_SCALE_CHANGE_MAX = 10.0
# Backward: the per-example norm of the gradient w.r.t. the hidden activations may change by
# at most this factor between the last hidden layer and the first. Measured: healthy MLPs and
# CNNs 0.3-5x (BatchNorm nets grow the gradient backwards, ~5x at 10 layers); torch default
# init 85x at 6 layers; faulty: sigmoid stacks 1e3-1e5x at 6-10 layers, 0.01 init 1e4x and
# more, N(0, 1) on tanh 1e3x (growing).
INIT_GRADIENT_CHANGE_MAX = 100.0
# Saturated tanh/sigmoid outputs (derivative < 5% of its peak, see
# babysit.nn.activations.SATURATION_DERIVATIVE_FRACTION). Measured: Xavier/tanh <= 0.05 per
# layer; N(0, 1) init 0.74-0.83 on every layer.
SATURATED_FRACTION_MAX = 0.25
# ReLU units that output 0 on every example of the audit sample. The CS231n notes warn that
# "as much as 40%" of a net can die; measured at init on digits: He/ReLU <= 0.14 per layer at
# 10 layers (deep ReLU nets lose a few units by correlation), 0 in CNNs; biases of -1 or less
# kill 0.9-1.0.
DEAD_FRACTION_MAX = 0.3

_RELU_FAMILY = {"relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "maxout"}
_SQUASHING = (nn.Softmax, nn.Softmin, nn.Sigmoid, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh)
_PLUMBING = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ==========================================================================================
# Data
# ==========================================================================================


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


def audit_data(
    x: Tensor,
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
    findings: list[Finding] = []
    finite_rows = torch.isfinite(x.flatten(1)).all(dim=1) if x.is_floating_point() else None
    if finite_rows is not None and not bool(finite_rows.all()):
        bad_values = int((~torch.isfinite(x)).sum())
        bad_rows = (~finite_rows).nonzero().flatten()
        if index is not None:
            bad_rows = index[bad_rows.cpu()].sort().values
        nan = int(torch.isnan(x).sum())
        sample = " in the sample checked" if index is not None else ""
        findings.append(
            Finding(
                "DATA_NONFINITE",
                "error",
                f"{bad_values} input values are NaN or inf ({nan} NaN) in {len(bad_rows)} of "
                f"{len(x)} examples{sample} (first at example {int(bad_rows[0])}); a single NaN "
                f"input makes the loss NaN",
                "drop or impute those examples before training (e.g. "
                "x[torch.isfinite(x).flatten(1).all(1)])",
                {"values": bad_values, "nan": nan, "examples": len(bad_rows), "of": len(x)},
            )
        )
    findings += _label_findings(output, y, task)

    features = trace.first_weight_input if trace is not None else None
    if features is None or features.shape[0] < 2:
        features = x[finite_rows] if finite_rows is not None else x.float()
    features = features.float()
    stats = input_statistics(features) if len(features) > 1 else {}
    stats["seen_by"] = trace.weight_calls()[0].name if trace and trace.weight_calls() else None
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


# ==========================================================================================
# Architecture
# ==========================================================================================


def _group(findings_by_layer: Sequence[str]) -> str:
    names = list(dict.fromkeys(findings_by_layer))
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} .. {names[-1]} ({len(names)})"


def audit_architecture(trace: Trace, task: Task, output: Tensor) -> list[Finding]:
    """SIGMOID_HIDDEN, OUTPUT_ACTIVATION, NO_NONLINEARITY and NO_NORMALIZATION, read off the
    forward trace (so they hold for any model whose layers are modules) and off the outputs."""
    findings: list[Finding] = []
    findings += _hidden_sigmoids(trace)
    findings += _output_activation(trace, task, output)
    findings += _linear_stacks(trace)
    weights = {c.name for c in trace.weight_calls()}
    has_norm = any(isinstance(c.module, NORMALIZATION) for c in trace.calls)
    if len(weights) >= NO_NORMALIZATION_MIN_LAYERS and not has_norm:
        findings.append(
            Finding(
                "NO_NORMALIZATION",
                "info",
                f"{len(weights)} weight layers and no normalization layer: deep nets without "
                f"BatchNorm depend on a careful init and learning rate",
                "consider BatchNorm after each Linear/Conv, before the nonlinearity (Ioffe & "
                "Szegedy 2015); babysit.nn.mlp/cnn(..., batch_norm=True)",
                {"weight_layers": len(weights), "threshold": NO_NORMALIZATION_MIN_LAYERS},
            )
        )
    return findings


def frozen_parameters(model: nn.Module) -> list[Finding]:
    """FROZEN_PARAMETERS: parameters with requires_grad=False never train. Info when some are
    (fine-tuning freezes a trunk on purpose), a warning when all are (nothing can learn)."""
    names = [name for name, p in model.named_parameters()]
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:
        return []
    every = len(frozen) == len(names)
    return [
        Finding(
            "FROZEN_PARAMETERS",
            "warning" if every else "info",
            f"{len(frozen)} of {len(names)} parameter tensors are frozen (requires_grad=False): "
            f"{_group(frozen)}; they will not change in training"
            + ("; nothing in the model can learn" if every else ""),
            "if that is not intended, set requires_grad=True on them (p.requires_grad_(True)) "
            "and make sure the optimizer is given them",
            {"frozen": frozen[:50], "parameters": len(names)},
        )
    ]


def _hidden_sigmoids(trace: Trace) -> list[Finding]:
    hidden = [
        call.name
        for call in trace.calls
        if isinstance(call.module, nn.Sigmoid)
        and any(c.is_weight for c in trace.next_real(call.index))
    ]
    if not hidden:
        return []
    names = list(dict.fromkeys(hidden))
    return [
        Finding(
            "SIGMOID_HIDDEN",
            "warning",
            f"sigmoid is a hidden activation at {_group(names)}: its outputs are not "
            f"zero-centred and it saturates, so gradients vanish through it (CS231n "
            f"Lecture 6: don't use sigmoid)",
            "use ReLU (with He init) or tanh (with Xavier init) in hidden layers",
            {"layers": names},
            names[0],
        )
    ]


def _output_activation(trace: Trace, task: Task, output: Tensor) -> list[Finding]:
    out = trace.output_call(_PLUMBING)
    name = out.name if out is not None else None
    width = output.shape[1] if output.dim() > 1 else 1
    if isinstance(getattr(out, "module", None), nn.Softmax) and width == 1:
        return [
            Finding(
                "OUTPUT_ACTIVATION",
                "error",
                f"{name} is a softmax over a single output: it is always 1, so the model "
                f"outputs a constant and learns nothing",
                "for a binary task output one raw score and use BCEWithLogitsLoss; for C "
                "classes output C scores and use CrossEntropyLoss",
                {"outputs": width},
                name,
            )
        ]
    if task.kind == "cross_entropy" and width == 1 and output.dim() == 2:
        return [
            Finding(
                "OUTPUT_ACTIVATION",
                "error",
                f"{task.name} over a single output: the softmax of one score is always 1, so "
                f"the loss is always 0 and nothing learns",
                "for a binary task use BCEWithLogitsLoss on the one output; otherwise give "
                "the model one output per class",
                {"outputs": width},
                name,
            )
        ]
    module = getattr(out, "module", None)
    if task.kind in ("cross_entropy", "bce_logits"):
        if isinstance(module, _SQUASHING):
            kind = type(module).__name__
            return [
                Finding(
                    "OUTPUT_ACTIVATION",
                    "warning",
                    f"the model's output passes through {kind} ({name}) before {task.name}, "
                    f"which expects raw scores (logits) and applies "
                    f"{'softmax' if task.kind == 'cross_entropy' else 'sigmoid'} itself: "
                    f"the loss is squashed and learning stalls",
                    f"remove {name} from the model (apply softmax/sigmoid only to read "
                    f"probabilities at inference)",
                    {"activation": kind},
                    name,
                )
            ]
        if task.kind == "cross_entropy" and width > 1 and output.dim() == 2:
            sums = output.sum(dim=1)
            if bool((output >= 0).all()) and bool(
                torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
            ):
                return [
                    Finding(
                        "OUTPUT_ACTIVATION",
                        "warning",
                        f"the model's outputs are probabilities (every row is >= 0 and sums "
                        f"to 1): softmax is applied in forward before {task.name}, which "
                        f"applies it again",
                        "return the raw scores from forward and let the loss apply softmax",
                        {"row_sum": float(sums.mean())},
                        name,
                    )
                ]
        return []
    if task.kind == "nll" and output.dim() >= 2 and width > 1:
        total = output.exp().sum(dim=1)
        if not bool(torch.allclose(total, torch.ones_like(total), atol=1e-3)):
            softmaxed = isinstance(module, nn.Softmax) or bool(
                (output >= 0).all() and torch.allclose(output.sum(1), torch.ones_like(total))
            )
            what = "probabilities, not log-probabilities" if softmaxed else "raw scores"
            return [
                Finding(
                    "OUTPUT_ACTIVATION",
                    "error" if not softmaxed else "warning",
                    f"{task.name} expects log-probabilities, but the model outputs {what} "
                    f"(exp of a row sums to {float(total.mean()):.3g}, not 1)",
                    "end the model with nn.LogSoftmax(dim=1), or return raw scores and use "
                    "CrossEntropyLoss",
                    {"exp_row_sum": float(total.mean())},
                    name,
                )
            ]
        return []
    if task.kind == "bce" and not bool(((output >= 0) & (output <= 1)).all()):
        return [
            Finding(
                "OUTPUT_ACTIVATION",
                "error",
                f"{task.name} takes probabilities but the model outputs values in "
                f"{float(output.min()):.3g}..{float(output.max()):.3g}",
                "return raw scores and use BCEWithLogitsLoss (numerically stable), or end "
                "the model with nn.Sigmoid()",
                {"min": float(output.min()), "max": float(output.max())},
                name,
            )
        ]
    return []


def _linear_stacks(trace: Trace) -> list[Finding]:
    pairs: list[tuple[str, str]] = []
    for call in trace.weight_calls():
        before = trace.previous_real(call.index, LINEAR_PASS_THROUGH)
        if before is not None and before.is_weight and (before.name, call.name) not in pairs:
            pairs.append((before.name, call.name))
    return [
        Finding(
            "NO_NONLINEARITY",
            "warning",
            f"{a} feeds {b} with no nonlinearity between them: two linear maps in a row are "
            f"one linear map, so the extra layer adds parameters but no capacity",
            f"put an activation (e.g. nn.ReLU()) between {a} and {b}, or merge them",
            {"layers": [a, b]},
            b,
        )
        for a, b in pairs
    ]


# ==========================================================================================
# Init
# ==========================================================================================


def _identical_rows(w: Tensor) -> bool:
    rows = w.detach().flatten(1)
    return rows.shape[0] > 1 and bool((rows == rows[0]).all())


def _units_stay_identical(layer: nn.Module, following: nn.Module | None) -> bool:
    """Whether the next weight layer reads the cloned units of `layer` with identical
    weights, so that their gradients (and so their updates) are identical too."""
    if following is None:
        return True
    units = layer.weight.shape[0]
    w = following.weight.detach()
    if w.dim() < 2 or w.shape[1] % units:
        return False  # e.g. grouped conv: cannot tell, so do not claim it
    columns = w.reshape(w.shape[0], units, -1).transpose(0, 1).flatten(1)
    return bool((columns == columns[0]).all())


def _symmetric_findings(trace: Trace) -> list[Finding]:
    order: list[tuple[str, nn.Module]] = []
    for call in trace.weight_calls():
        if call.name not in [n for n, _ in order]:
            order.append((call.name, call.module))
    stuck, soft = [], []
    for i, (name, layer) in enumerate(order[:-1]):
        w = layer.weight
        bias = getattr(layer, "bias", None)
        if not _identical_rows(w) or getattr(layer, "groups", 1) != 1:
            continue
        if bias is not None and not bool((bias == bias[0]).all()):
            continue
        following = order[i + 1][1]
        (stuck if _units_stay_identical(layer, following) else soft).append(
            (name, float(w.detach().flatten()[0]))
        )
    findings = []
    if stuck:
        names = [n for n, _ in stuck]
        value = stuck[0][1]
        findings.append(
            Finding(
                "INIT_SYMMETRIC",
                "error",
                f"every unit of {_group(names)} starts with the same weights "
                f"({'all zero' if value == 0 else f'all {value:.3g}'}) and the next layer reads "
                f"them with the same weights: the units compute the same thing, get the same "
                f"gradient and stay identical (CS231n: never initialise to 0 or a constant)",
                "initialise weights randomly: babysit.nn.apply_init(model, 'he') for ReLU, "
                "'xavier' for tanh",
                {"layers": names, "value": value},
                names[0],
            )
        )
    if soft:
        names = [n for n, _ in soft]
        findings.append(
            Finding(
                "INIT_SYMMETRIC",
                "warning",
                f"every unit of {_group(names)} starts with the same weights: only the random "
                f"weights of the following layer tell them apart, which slows learning",
                "initialise every layer randomly (He for ReLU, Xavier for tanh)",
                {"layers": names},
                names[0],
            )
        )
    return findings


def _family(activations: Sequence[str]) -> str:
    names = set(activations)
    if names and names <= _RELU_FAMILY:
        return "relu"
    if names == {"tanh"}:
        return "tanh"
    if "sigmoid" in names:
        return "sigmoid"
    return "mixed"


def _init_fix(family: str) -> str:
    return {
        "relu": "initialise with He (Kaiming): babysit.nn.apply_init(model, 'he'), i.e. "
        "std = sqrt(2 / fan_in) before ReLU; or add BatchNorm; or LSUV "
        "(apply_init(model, 'lsuv', data=x))",
        "tanh": "initialise with Xavier: babysit.nn.apply_init(model, 'xavier'), i.e. std = "
        "1 / sqrt(fan_in); or add BatchNorm; or LSUV (apply_init(model, 'lsuv', data=x))",
        "sigmoid": "replace sigmoid by ReLU (He init) or tanh (Xavier init); or add BatchNorm",
    }.get(
        family,
        "use LSUV, which scales each layer to unit output variance whatever its activation "
        "(babysit.nn.apply_init(model, 'lsuv', data=x)), or He/Xavier per activation",
    )


def _start(names: Sequence[str], values: Sequence[float], shrinking: bool) -> str:
    """The layer where a monotone collapse or blow-up begins: the first hop that moves the
    value by more than 1.5x in the bad direction."""
    for i in range(1, len(values)):
        prev, cur = values[i - 1], values[i]
        if prev > 0 and ((cur / prev < 1 / 1.5) if shrinking else (cur / prev > 1.5)):
            return names[i]
    return names[1] if len(names) > 1 else names[0]


def _hidden_activations(stats: Sequence[LayerStats], trace: Trace) -> list[LayerStats]:
    """Activation-module statistics of hidden layers, in execution order."""
    first_call = {}
    for call in trace.calls:
        first_call.setdefault(call.name, call.index)
    weights = trace.weight_calls()
    last_weight = weights[-1].index if weights else -1
    hidden = [
        s
        for s in stats
        if s.activation not in (None, "softmax", "identity")
        and s.name in first_call
        and first_call[s.name] < last_weight
    ]
    return sorted(hidden, key=lambda s: first_call[s.name])


def _depth_signal(
    stats: Sequence[LayerStats], trace: Trace
) -> tuple[list[LayerStats], list[int]] | None:
    """The layers whose outputs carry the signal through depth: hidden activations, or the
    hidden weight layers when the activations are functional; with the per-example size of
    each output (for gradient norms)."""
    layers = _hidden_activations(stats, trace)
    if len(layers) < INIT_DEPTH_MIN_LAYERS:
        weight_names = list(dict.fromkeys(c.name for c in trace.weight_calls()))[:-1]
        by_name = {s.name: s for s in stats}
        layers = [by_name[n] for n in weight_names if n in by_name]
    if len(layers) < INIT_DEPTH_MIN_LAYERS:
        return None
    shapes = {}
    for call in trace.calls:
        shapes.setdefault(call.name, call.output_shape)
    sizes = [math.prod(shapes.get(s.name, (1, 1))[1:]) or 1 for s in layers]
    return layers, sizes


def audit_init(
    stats: Sequence[LayerStats], trace: Trace, input_note: str = ""
) -> tuple[list[Finding], dict[str, Any]]:
    """INIT_SYMMETRIC from the weights; INIT_VANISHING / INIT_EXPLODING from how the
    activations' std and the gradients' norm change across depth; INIT_SATURATED and
    DEAD_UNITS per layer. `stats` are `babysit.probes.activation_stats` on a data batch with
    its targets (so that gradients were measured); `input_note` says what inputs they saw."""
    measurement: dict[str, Any] = {}
    symmetric = _symmetric_findings(trace)
    if any(f.severity == "error" for f in symmetric):
        measurement["skipped"] = "symmetric init: the per-layer statistics are degenerate"
        return symmetric, measurement
    findings = list(symmetric)
    note = f" ({input_note})" if input_note else ""

    measurement["hidden_layers"] = len(_hidden_activations(stats, trace))
    signal = _depth_signal(stats, trace)
    family = _family([s.activation for s in stats if s.activation and s.activation != "softmax"])
    if signal is not None:
        layers, sizes = signal
        names = [s.name for s in layers]
        stds = [s.std for s in layers]
        grads = [
            None if s.grad_std is None else s.grad_std * math.sqrt(size)
            for s, size in zip(layers, sizes, strict=True)
        ]
        measurement.update({"depth_layers": names, "std": stds, "grad_norm": grads})
        nonfinite = next((s.name for s in stats if s.nonfinite), None)
        forward = stds[-1] / stds[0] if stds[0] > 0 else math.nan
        backward = (
            grads[0] / grads[-1]
            if None not in grads and grads[-1] and math.isfinite(grads[0] or math.nan)
            else math.nan
        )
        measurement.update({"forward_change": forward, "backward_change": backward})
        findings += _depth_findings(names, stds, grads, forward, backward, nonfinite, family, note)
    else:
        nonfinite = next((s.name for s in stats if s.nonfinite), None)
        if nonfinite is not None:  # too shallow to judge depth, but an overflow is an overflow
            findings += _depth_findings(
                [nonfinite], [math.nan], [None], math.nan, math.nan, nonfinite, family, note
            )
    findings += _saturation_findings(stats, trace, note)
    dead = _dead_findings(stats, trace, note)
    collapse = next(
        (
            i
            for i, f in enumerate(findings)
            if f.code == "INIT_VANISHING" and "std goes" in f.message
        ),
        None,
    )
    if dead and collapse is not None:
        # A collapsed signal no longer depends on the example, so each unit's sign is fixed
        # and about half the ReLUs look dead: a symptom of the collapse, not a second cause.
        f = findings[collapse]
        findings[collapse] = replace(
            f,
            message=f"{f.message}; as a result {dead[0].evidence['layers'][0]} and other layers "
            f"have dead units (up to {max(dead[0].evidence['dead_fraction']):.0%})",
            evidence={**f.evidence, "dead": dead[0].evidence},
        )
        dead = []
    findings += dead
    return findings, measurement


def _depth_findings(
    names: list[str],
    stds: list[float],
    grads: list[float | None],
    forward: float,
    backward: float,
    nonfinite: str | None,
    family: str,
    note: str,
) -> list[Finding]:
    limit, grad_limit = INIT_SCALE_CHANGE_MAX, INIT_GRADIENT_CHANGE_MAX
    first, last = names[0], names[-1]
    evidence = {
        "layers": names,
        "std": stds,
        "grad_norm": grads,
        "forward_change": forward,
        "backward_change": backward,
        "limits": [limit, grad_limit],
    }
    if nonfinite is not None:
        return [
            Finding(
                "INIT_EXPLODING",
                "error",
                f"activations overflow to inf/NaN at {nonfinite} at init{note}: the weights "
                f"are far too large",
                _init_fix(family),
                evidence,
                nonfinite,
            )
        ]
    findings = []
    forward_bad = math.isfinite(forward) and (forward < 1 / limit or forward > limit)
    backward_bad = math.isfinite(backward) and (backward < 1 / grad_limit or backward > grad_limit)
    vanish_parts, explode_parts = [], []
    if forward_bad:
        text = (
            f"the activations' std goes from {_fmt(stds[0])} at {first} to {_fmt(stds[-1])} at "
            f"{last} ({_fmt(forward)}x over {len(names) - 1} layers, limit {limit:g}x either "
            f"way); it starts at {_start(names, stds, forward < 1)}"
        )
        (vanish_parts if forward < 1 else explode_parts).append(text)
    if backward_bad:
        gvals = [g or 0.0 for g in grads]
        text = (
            f"the gradient's norm goes from {_fmt(gvals[-1])} at {last} back to "
            f"{_fmt(gvals[0])} at {first} ({_fmt(backward)}x, limit {grad_limit:g}x either way)"
        )
        (vanish_parts if backward < 1 else explode_parts).append(text)
    if vanish_parts:
        findings.append(
            Finding(
                "INIT_VANISHING",
                "warning",
                "signal collapses with depth at init" + note + ": " + "; ".join(vanish_parts),
                _init_fix(family),
                evidence,
                _start(names, stds, True)
                if forward_bad and forward < 1
                else _start(names[::-1], [g or 0.0 for g in grads][::-1], True),
            )
        )
    if explode_parts:
        findings.append(
            Finding(
                "INIT_EXPLODING",
                "warning",
                "signal grows with depth at init" + note + ": " + "; ".join(explode_parts),
                _init_fix(family),
                evidence,
                _start(names, stds, False)
                if forward_bad and forward > 1
                else _start(names[::-1], [g or 0.0 for g in grads][::-1], False),
            )
        )
    return findings


def _saturation_findings(stats: Sequence[LayerStats], trace: Trace, note: str) -> list[Finding]:
    hidden = {s.name for s in _hidden_activations(stats, trace)}
    saturated = [
        s
        for s in stats
        if s.name in hidden
        and s.saturated_fraction is not None
        and s.saturated_fraction > SATURATED_FRACTION_MAX
    ]
    if not saturated:
        return []
    worst = max(saturated, key=lambda s: s.saturated_fraction or 0)
    family = "sigmoid" if any(s.activation == "sigmoid" for s in saturated) else "tanh"
    return [
        Finding(
            "INIT_SATURATED",
            "warning",
            f"{len(saturated)} {family} layer(s) saturated at init{note}: up to "
            f"{worst.saturated_fraction:.0%} of {worst.name}'s outputs sit at the flat ends "
            f"(limit {SATURATED_FRACTION_MAX:.0%}), where the gradient is ~0: the weights are "
            f"too large",
            _init_fix(family),
            {
                "layers": [s.name for s in saturated],
                "saturated_fraction": [s.saturated_fraction for s in saturated],
                "threshold": SATURATED_FRACTION_MAX,
            },
            saturated[0].name,
        )
    ]


def _bias_before(trace: Trace, name: str) -> tuple[str, float] | None:
    """The weight layer feeding activation `name`, and its mean bias."""
    for call in trace.calls:
        if call.name == name:
            before = trace.previous_real(call.index)
            if before is not None and isinstance(before.module, WEIGHT_LAYERS):
                bias = getattr(before.module, "bias", None)
                if bias is not None:
                    return before.name, float(bias.detach().mean())
            return None
    return None


def _downstream_of_overflow(stats: Sequence[LayerStats], trace: Trace) -> set[str]:
    """Layers whose outputs are not finite, and every layer that runs after the first of
    them: their zeros come from inf/NaN arithmetic (relu(-inf) = 0, and NaN through a ReLU is
    0 or NaN depending on the CPU kernel torch picks), not from units that died."""
    first_call: dict[str, int] = {}
    for call in trace.calls:
        first_call.setdefault(call.name, call.index)
    broken = [first_call.get(s.name, -1) for s in stats if s.nonfinite]
    if not broken:
        return set()
    start = min(i for i in broken) if all(i >= 0 for i in broken) else -1
    return {s.name for s in stats if s.nonfinite or first_call.get(s.name, -1) >= start}


def _dead_findings(stats: Sequence[LayerStats], trace: Trace, note: str) -> list[Finding]:
    hidden = {s.name for s in _hidden_activations(stats, trace)}
    overflowed = _downstream_of_overflow(stats, trace)
    dead = [
        s
        for s in stats
        if s.name in hidden
        and s.name not in overflowed
        and s.dead_fraction is not None
        and math.isfinite(s.dead_fraction)
        and s.dead_fraction > DEAD_FRACTION_MAX
    ]
    if not dead:
        return []
    worst = max(dead, key=lambda s: s.dead_fraction or 0)
    all_dead = [s.name for s in dead if (s.dead_fraction or 0) >= 1.0]
    units = _units(trace)
    live = {s.name: round(units.get(s.name, 0) * (1 - (s.dead_fraction or 0))) for s in dead}
    bias = _bias_before(trace, worst.name)
    cause = ""
    if bias is not None and bias[1] < 0:
        cause = f"; the biases of {bias[0]} average {bias[1]:.3g}, which keeps units below zero"
    return [
        Finding(
            "DEAD_UNITS",
            "error" if all_dead else "warning",
            f"{worst.dead_fraction:.0%} of the units of {worst.name} output 0 for every example "
            f"of the sample at init{note} (limit {DEAD_FRACTION_MAX:.0%})"
            + (
                f"; all units of {', '.join(all_dead)} are dead, nothing flows through"
                if all_dead
                else ""
            )
            + cause,
            "initialise biases at 0 or slightly positive (0.01, CS231n notes), weights with He "
            "(babysit.nn.apply_init(model, 'he')); centre the inputs; or use Leaky ReLU / ELU, "
            "whose units cannot die",
            {
                "layers": [s.name for s in dead],
                "dead_fraction": [s.dead_fraction for s in dead],
                "threshold": DEAD_FRACTION_MAX,
                "units": [units.get(s.name) for s in dead],
                "live_units": [live[s.name] for s in dead],
            },
            worst.name,
        )
    ]


def _units(trace: Trace) -> dict[str, int]:
    """Units (features, or channels of a conv map) of each traced module's output."""
    units: dict[str, int] = {}
    for call in trace.calls:
        shape = call.output_shape
        if shape is not None and len(shape) >= 2:
            units.setdefault(call.name, int(shape[1]))
    return units
