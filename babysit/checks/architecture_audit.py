"""The architecture audit, read off one forward trace (so it holds for any model whose layers
are modules) and the outputs: hidden sigmoids, squashed logits, stacked linear maps, depth
without normalization, frozen parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Found
from babysit.checks.findings import Finding
from babysit.checks.task import Task, class_dim
from babysit.nn.layers import (
    DROPOUT,
    LINEAR_PASS_THROUGH,
    NORMALIZATION,
    PLUMBING,
    is_feature_normalization,
    layer_kind,
)
from babysit.probes.trace import Trace

__all__ = [
    "NO_NORMALIZATION_MIN_LAYERS",
    "audit_architecture",
    "frozen_parameters",
    "group_names",
]

# --- architecture -------------------------------------------------------------------------
# Ioffe & Szegedy (2015) and the lecture motivate BatchNorm by deep nets; from this many
# weight layers on, a net without any normalization layer gets an info finding.
NO_NORMALIZATION_MIN_LAYERS = 6

_SQUASHING = (nn.Softmax, nn.Softmin, nn.Sigmoid, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh)
_PLUMBING = (*PLUMBING, *DROPOUT)


def group_names(findings_by_layer: Sequence[str]) -> str:
    names = list(dict.fromkeys(findings_by_layer))
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} .. {names[-1]} ({len(names)})"


def audit_architecture(
    trace: Trace, task: Task, output: Tensor, y: Tensor | None = None
) -> list[Finding]:
    """SIGMOID_HIDDEN, OUTPUT_ACTIVATION, NO_NONLINEARITY and NO_NORMALIZATION, read off the
    forward trace (so they hold for any model whose layers are modules) and off the outputs.
    With the targets `y`, the outputs' class dimension is the task's (per-position scores
    (B, V, T) or (B, T, V) against (B, T) tokens), else dimension 1."""
    findings: list[Finding] = []
    findings += _hidden_sigmoids(trace)
    findings += _output_activation(trace, task, output, y)
    findings += _linear_stacks(trace)
    weights = {c.name for c in trace.weight_calls()}
    has_norm = any(
        isinstance(c.module, NORMALIZATION) or is_feature_normalization(c.module)
        for c in trace.calls
    )
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
            f"{group_names(frozen)}; they will not change in training"
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
            f"sigmoid is a hidden activation at {group_names(names)}: its outputs are not "
            f"zero-centred and it saturates, so gradients vanish through it (CS231n "
            f"Lecture 6: don't use sigmoid)",
            "use ReLU (with He init) or tanh (with Xavier init) in hidden layers",
            {"layers": names},
            names[0],
        )
    ]


def _output_activation(
    trace: Trace, task: Task, output: Tensor, y: Tensor | None = None
) -> list[Finding]:
    out = trace.output_call(_PLUMBING)
    name = out.name if out is not None else None
    dim = class_dim(output, y) if y is not None and task.class_labels else None
    per_position = dim is not None and output.dim() > 2
    dim = dim if dim is not None else 1
    width = output.shape[dim] if output.dim() > 1 else 1
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
        if task.kind == "cross_entropy" and width > 1 and (output.dim() == 2 or per_position):
            sums = output.sum(dim=dim)
            if bool((output >= 0).all()) and bool(
                torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
            ):
                return [
                    Finding(
                        "OUTPUT_ACTIVATION",
                        "warning",
                        f"the model's outputs are probabilities (every "
                        f"{'position' if per_position else 'row'} is >= 0 and sums to 1 over "
                        f"the {width} classes): softmax is applied in forward before "
                        f"{task.name}, which applies it again",
                        "return the raw scores from forward and let the loss apply softmax",
                        {"row_sum": float(sums.mean())},
                        name,
                    )
                ]
        return []
    if task.kind == "nll" and output.dim() >= 2 and width > 1:
        return _not_log_probabilities(task, output, dim, module, name)
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


def _not_log_probabilities(
    task: Task, output: Tensor, dim: int, module: nn.Module | None, name: str | None
) -> list[Finding]:
    """OUTPUT_ACTIVATION for NLLLoss on outputs that are not log-probabilities along `dim`
    (probabilities: a warning; raw scores: an error)."""
    total = output.exp().sum(dim=dim)
    if bool(torch.allclose(total, torch.ones_like(total), atol=1e-3)):
        return []
    softmaxed = isinstance(module, nn.Softmax) or bool(
        (output >= 0).all() and torch.allclose(output.sum(dim), torch.ones_like(total))
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


class ArchitectureAudit(Check):
    """Hidden sigmoids, squashed logits, stacked linear maps, depth without normalization,
    frozen parameters."""

    name = "architecture audit"
    key = "architecture"
    title = "architecture audit"
    gate = True
    codes = {
        "SIGMOID_HIDDEN": "warning",
        "OUTPUT_ACTIVATION": "error or warning",
        "NO_NONLINEARITY": "warning",
        "NO_NORMALIZATION": "info",
        "FROZEN_PARAMETERS": "warning or info",
    }

    def run(self, context: Context) -> Found:
        trace, output = context.trace, context.trace.output
        kinds: dict[str, list[str]] = {}
        for call in trace.calls:
            kind = layer_kind(call.module)
            if kind is not None and call.name not in kinds.setdefault(kind, []):
                kinds[kind].append(call.name)
        structure = {
            "weight_layers": list(dict.fromkeys(c.name for c in trace.weight_calls())),
            "layer_kinds": {kind: len(names) for kind, names in kinds.items()},
            "output_shape": list(output.shape[1:]),
        }
        found = audit_architecture(trace, context.task, output, context.batch_y)
        found += frozen_parameters(context.model)
        return found, structure

    needs = "weight_layers"

    def reads(self, a: dict[str, Any]) -> str:
        others = ", ".join(
            f"{n} {kind}"
            for kind, n in (a.get("layer_kinds") or {}).items()
            if kind not in ("linear", "conv", "conv1d_transposed")
        )
        return (
            f"{len(a['weight_layers'])} weight layer(s){f' ({others})' if others else ''}, output "
            f"{tuple(a.get('output_shape') or [])} (no hidden sigmoid, raw scores into the loss, "
            f"a nonlinearity between linear maps)"
        )
