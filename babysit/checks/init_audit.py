"""The init audit: activations and gradients across depth at init, saturated tanh/sigmoid
units, dead ReLU units and symmetric weights, from the probes' per-layer statistics and the
forward trace. Thresholds: the CS231n notes where they give one, otherwise our calibration
grid (tests/checks/test_calibration.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from babysit.checks.architecture_audit import group_names
from babysit.checks.base import Check, Context, Figure, Found, fmt
from babysit.checks.findings import Finding
from babysit.nn.layers import (
    ATTENTION,
    RECURRENT,
    is_feature_normalization,
    is_weight_layer,
    weight_matrix,
)
from babysit.probes import LayerStats
from babysit.probes.trace import Trace

__all__ = [
    "DEAD_FRACTION_MAX",
    "INIT_DEPTH_MIN_LAYERS",
    "INIT_GRADIENT_CHANGE_MAX",
    "INIT_SCALE_CHANGE_MAX",
    "SATURATED_FRACTION_MAX",
    "audit_init",
]

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


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _identical_rows(w: Tensor) -> bool:
    rows = w.detach().flatten(1)
    return rows.shape[0] > 1 and bool((rows == rows[0]).all())


def _units_stay_identical(layer: nn.Module, following: nn.Module | None) -> bool:
    """Whether the next weight layer reads the cloned units of `layer` with identical
    weights, so that their gradients (and so their updates) are identical too."""
    if following is None:
        return True
    units = weight_matrix(layer).shape[0]
    w = weight_matrix(following).detach()
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
        w = weight_matrix(layer)
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
                f"every unit of {group_names(names)} starts with the same weights "
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
                f"every unit of {group_names(names)} starts with the same weights: only the random "
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
        "recurrent": "keep PyTorch's init of recurrent layers (uniform +-1/sqrt(hidden size): "
        "rnn.reset_parameters()), or orthogonal hidden-to-hidden weights (Saxe et al. 2014) "
        "with Xavier input weights; do not scale them up",
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


def _transform_names(trace: Trace) -> list[str]:
    """The hidden layers that transform the signal, in forward order: weight layers (but the
    last, the output layer), recurrent and attention layers."""
    weights = list(dict.fromkeys(c.name for c in trace.weight_calls()))
    hidden = set(weights[:-1])
    return list(
        dict.fromkeys(
            c.name
            for c in trace.calls
            if c.name in hidden or isinstance(c.module, (*RECURRENT, *ATTENTION))
        )
    )


def _depth_signal(
    stats: Sequence[LayerStats], trace: Trace
) -> tuple[list[LayerStats], list[int]] | None:
    """The layers whose outputs carry the signal through depth: hidden activations, or the
    hidden weight, recurrent and attention layers when the activations are functional; with
    the per-example size of each output (for gradient norms). Not the latter in a net with
    LayerNorm/RMSNorm: there the signal is a residual stream rescaled by the norms, and the
    outputs of the layers are branches into it, small by design (GPT-2 scales its output
    projections by 1/sqrt(2 x layers)), so their ratio across depth says nothing; measured
    on the zoo's healthy GPT-2 and BERT (tests/zoo): 0.08x forward, 4e-5x backward."""
    layers = _hidden_activations(stats, trace)
    if len(layers) < INIT_DEPTH_MIN_LAYERS:
        if any(is_feature_normalization(c.module) for c in trace.calls):
            return None
        by_name = {s.name: s for s in stats}
        layers = [by_name[n] for n in _transform_names(trace) if n in by_name]
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
    directions = (
        ("INIT_VANISHING", "collapses", vanish_parts, True),
        ("INIT_EXPLODING", "grows", explode_parts, False),
    )
    for code, verb, parts, shrinking in directions:
        if not parts:
            continue
        forward_here = forward_bad and (forward < 1) == shrinking
        findings.append(
            Finding(
                code,
                "warning",
                f"signal {verb} with depth at init" + note + ": " + "; ".join(parts),
                _init_fix(family),
                evidence,
                _start(names, stds, shrinking)
                if forward_here
                else _start(names[::-1], [g or 0.0 for g in grads][::-1], shrinking),
            )
        )
    return findings


def _saturation_findings(stats: Sequence[LayerStats], trace: Trace, note: str) -> list[Finding]:
    """Saturated hidden tanh/sigmoid layers, and recurrent layers (tanh RNN, LSTM, GRU:
    their output near +-1 means saturated gates and state, wherever they sit)."""
    recurrent = {c.name for c in trace.calls if isinstance(c.module, RECURRENT)}
    hidden = {s.name for s in _hidden_activations(stats, trace)} | recurrent
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
    if saturated[0].name in recurrent:
        family = "recurrent"
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
            if before is not None and is_weight_layer(before.module):
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


class InitAudit(Check):
    """Activations and gradients across depth at init, saturation, dead units, symmetric
    weights: one forward and backward pass of a batch through the untrained model."""

    name = "init audit"
    key = "init"
    title = "init audit"
    codes = {
        "INIT_VANISHING": "warning",
        "INIT_EXPLODING": "error or warning",
        "INIT_SATURATED": "warning",
        "INIT_SYMMETRIC": "error or warning",
        "DEAD_UNITS": "error, warning or info",
    }
    section = "Activations and gradients at init"
    figures = (
        Figure(
            "activations.png",
            "activation_figure",
            ("layers", "init"),
            "per-layer activation statistics",
            "Left: mean and std of each layer's output. Right: the size of the loss's "
            "gradient with respect to each layer's output (per example), log scale.",
        ),
        Figure(
            "histograms.png",
            "histogram_figure",
            ("layers",),
            "activation histograms",
            "Distribution of each layer's outputs.",
        ),
    )

    def skip(self, context: Context) -> str | None:
        return context.blocked()

    def run(self, context: Context) -> Found:
        from babysit.probes import activation_stats

        context.check_loss()
        audit_x, note = context.audit_inputs()
        stats = activation_stats(
            context.model,
            audit_x,
            context.batch_y,
            loss_fn=context.task.loss_fn,
            forward=context.task.forward,
        )
        context.measurements["layers"] = [s.to_dict() for s in stats]
        found, measurement = audit_init(stats, context.trace, note)
        measurement["inputs"] = note or "the data as given"
        return found, measurement

    def describe(self, measurements: dict[str, Any]) -> str | None:
        i = measurements.get("init")
        if i is None:
            return None
        if "forward_change" not in i:
            hidden = i.get("hidden_layers")
            return (
                f"{hidden if hidden is not None else '?'} hidden layer(s): depth is judged from "
                f"3; dead and saturated units checked"
            )
        return (
            f"activation std x{fmt(i['forward_change'])} over depth (within 10x), gradient "
            f"norm x{fmt(i['backward_change'])} (within 100x)"
        )
