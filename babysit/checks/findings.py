"""A Finding: one thing the checkup found, with its stable code, the numbers and the fix.

The codes are a public contract (docs/checkup.md): they are documented, never renamed, and
users match on them in scripts and CI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

CODES: dict[str, str] = {
    "DATA_NONFINITE": "NaN or inf in the inputs",
    "LABELS_INVALID": "labels outside [0, C) or not integers, for a class-label loss",
    "DATA_NOT_CENTERED": "input features far from zero mean (e.g. raw pixels)",
    "DATA_NOT_SCALED": "input scale far from unit variance",
    "SIGMOID_HIDDEN": "sigmoid used as a hidden activation",
    "OUTPUT_ACTIVATION": "the logits are squashed before a loss that expects raw scores",
    "NO_NONLINEARITY": "consecutive Linear/Conv layers with no nonlinearity between them",
    "NO_NORMALIZATION": "a deep network without normalization layers",
    "FROZEN_PARAMETERS": "parameters with requires_grad=False, which never train",
    "INIT_VANISHING": "activation (or gradient) scale collapses with depth at init",
    "INIT_EXPLODING": "activation (or gradient) scale grows with depth at init",
    "INIT_SATURATED": "tanh/sigmoid units saturated at init",
    "INIT_SYMMETRIC": "weights zero or constant at init, so the units of a layer stay identical",
    "DEAD_UNITS": "ReLU-family units that never activate on a data sample",
    "INIT_LOSS_MISMATCH": "initial loss far from ln(C) for a C-class softmax",
    "REG_NO_EFFECT": "adding regularization does not raise the loss",
    "CANNOT_OVERFIT": "the model cannot overfit a tiny training subset",
    "LABELS_UNLEARNABLE": "held-out accuracy stays at chance: the labels do not follow the inputs",
    "WORSE_THAN_LINEAR": "the trained model scores far below a linear classifier on held-out data",
    "LR_TOO_LOW": "the loss barely moves at the given learning rate",
    "LR_TOO_HIGH": "the loss explodes (NaN, or over 3x its initial value) at the given lr",
    "LR_SUGGESTION": "the learning-rate range test's usable range and suggestion",
    "UPDATE_RATIO_LOW": "per-layer update/weight ratio far below ~1e-3",
    "UPDATE_RATIO_HIGH": "per-layer update/weight ratio far above ~1e-3",
    "OVERFITTING": "large gap between training and validation accuracy",
    "UNDERFITTING": "both training and validation accuracy low",
    "NAN_LOSS": "the loss became NaN or inf during training",
    "LOSS_EXPLODED": "the loss went above 3x its first value during training",
    "LOSS_NOISY": "the loss curve is dominated by step-to-step noise (batch too small)",
    "GRAD_ACCUMULATING": "gradients are never zeroed between optimizer steps",
    "PARAMS_NOT_UPDATED": "trainable parameters that get no gradient or never change in training",
    "EVAL_MODE_TRAINING": "optimizer steps while the model's dropout/BatchNorm are in eval mode",
    "CHECK_FAILED": "a check could not run (the message says why); the other checks still ran",
    "CHECK_SKIPPED": "a check was skipped because an earlier error makes it meaningless",
    "TARGETS_NOT_SCALED": "regression targets far from unit scale (standardize them)",
    "SHAPE_BROADCAST": "output and target shapes that match only by broadcasting",
}
"""Every finding code and its one-line meaning. New codes may be added; none is renamed."""


@dataclass(frozen=True)
class Finding:
    """One result of the checkup.

    code: a stable key from CODES. severity: "error" (training cannot work), "warning" (it
    will train badly) or "info". message: what was measured, with the numbers. fix: what to
    do about it, concretely. evidence: the numbers behind the message (JSON-serialisable).
    layer: the module name it is about, if any. check: the key of the check that raised it
    (babysit.checks.registry), which places it in the report; None for the checkup's own
    bookkeeping and for findings made by hand.
    """

    code: str
    severity: Severity
    message: str
    fix: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    check: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}; add it to CODES first")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        known = ("code", "severity", "message", "fix", "evidence", "layer")
        return cls(**{k: d[k] for k in known}, check=d.get("check"))
