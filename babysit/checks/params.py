"""Trainable parameters that never train (PARAMS_NOT_UPDATED): no gradient reaches them (a
detached trunk, a module outside the graph), or they have one and still do not change (not
given to the optimizer, the gradient cleared before the step).

Measured around a short run: `snapshot` before, `gradient_norms` after a backward pass,
`snapshot` after the steps; `parameter_updates` joins them, `check_params_updated` decides.
Per tensor, so a vocabulary row no batch uses does not count. See docs/checkup.md.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.findings import Finding

__all__ = [
    "PARAMS_LISTED",
    "check_params_updated",
    "gradient_norms",
    "optimizer_parameter_names",
    "parameter_updates",
    "snapshot",
]

# "No gradient" means exactly none: a gradient of None (the parameter is not in the graph)
# or one that is exactly zero in every entry (it is, but detached upstream of the loss:
# autograd then still allocates zeros for some modules). Numerical near-zeros, such as a bias
# before BatchNorm (whose true gradient is 0 but which autograd computes as ~1e-9), are not
# exact zeros and are not reported: the threshold is no threshold, on purpose.
# "Never changes" is judged only when some other parameter did change in the same run, so
# that a learning rate too small to move a float32 weight (LR_TOO_LOW's business) is not
# blamed on the parameters.
# Likewise a gradient that is a true zero computed inexactly, such as an attention's key bias
# (the softmax over each query's scores ignores a shift common to all keys: q.(k_j + b)
# moves every score of q by q.b) is no reason for a parameter to change: "has a gradient but
# never changed" counts only gradients above this fraction of the median gradient norm of
# the parameters that changed. Measured on a written-out attention with torch's default
# biases: the key bias 7e-10 to 8e-10 against a median of 0.06-0.12 (1e-8 of it); the
# smallest real gradient there, the query bias, 0.1 of it.
NUMERICAL_ZERO_GRADIENT = 1e-6
PARAMS_LISTED = 8  # names quoted in a message; the evidence holds up to 50


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def gradient_norms(model: nn.Module) -> dict[str, float | None]:
    """The gradient norm of each trainable parameter after a backward pass; None where the
    gradient is None."""
    return {
        n: None if p.grad is None else float(p.grad.detach().float().norm())
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def optimizer_parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the model's parameters that the optimizer holds."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [n for n, p in model.named_parameters() if id(p) in held]


def parameter_updates(
    before: dict[str, Tensor],
    after: dict[str, Tensor],
    grads: dict[str, float | None],
    in_optimizer: list[str] | None = None,
) -> dict[str, Any]:
    """Per parameter: its gradient norm (None: no gradient), its norm before, the norm of its
    change over the run, and whether the optimizer holds it (None: unknown)."""
    held = None if in_optimizer is None else set(in_optimizer)
    parameters = {}
    for name, old in before.items():
        new = after.get(name)
        change = float((new.float() - old.float()).norm()) if new is not None else math.nan
        parameters[name] = {
            "grad_norm": grads.get(name),
            "norm": float(old.float().norm()),
            "change": change,
            "in_optimizer": None if held is None else name in held,
        }
    return {"parameters": parameters}


def _group(names: list[str]) -> str:
    shown = ", ".join(names[:PARAMS_LISTED])
    return shown + (f" and {len(names) - PARAMS_LISTED} more" if len(names) > PARAMS_LISTED else "")


def check_params_updated(measurement: dict[str, Any]) -> list[Finding]:
    """PARAMS_NOT_UPDATED (error, as the Monitor's on a run, checks/training_run.py): trainable
    parameters that get no gradient, or that have one but never change while others do (not
    in the optimizer, gradient cleared before the step). The part of the model they hold
    never trains: the model being checked is not the one that will be trained."""
    parameters: dict[str, dict[str, Any]] = measurement.get("parameters", {})
    if not parameters:
        return []
    no_grad = [n for n, p in parameters.items() if not p["grad_norm"]]
    changed = [n for n, p in parameters.items() if p["change"] and math.isfinite(p["change"])]
    moving = [parameters[n]["grad_norm"] for n in changed if parameters[n]["grad_norm"]]
    floor = NUMERICAL_ZERO_GRADIENT * statistics.median(moving) if moving else 0.0
    stuck = [
        n
        for n, p in parameters.items()
        if p["grad_norm"] and p["grad_norm"] > floor and p["change"] == 0 and changed
    ]
    not_held = [n for n in stuck if parameters[n]["in_optimizer"] is False]
    findings = []
    if no_grad:
        every = len(no_grad) == len(parameters)
        findings.append(
            Finding(
                "PARAMS_NOT_UPDATED",
                "error",
                f"{len(no_grad)} of {len(parameters)} trainable parameter tensors get no "
                f"gradient from the loss: {_group(no_grad)}"
                + ("; nothing in the model can learn" if every else "; they will never train"),
                "find where the graph is cut between them and the loss: a .detach(), "
                ".data, .item() or torch.no_grad() in forward, a tensor rebuilt from NumPy, or "
                "a module that forward never calls (remove it, or use it)",
                {"no_gradient": no_grad[:50], "parameters": len(parameters)},
            )
        )
    if stuck:
        why = (
            f"{len(not_held)} of them are not in the optimizer"
            if not_held
            else "they are not in the optimizer, or their gradient is cleared before the step"
        )
        findings.append(
            Finding(
                "PARAMS_NOT_UPDATED",
                "error",
                f"{len(stuck)} trainable parameter tensors have a gradient but never changed "
                f"during the run while {len(changed)} others did: {_group(stuck)}; {why}",
                "build the optimizer from model.parameters() after the model is complete "
                "(modules added later are missing from it), and call zero_grad() before "
                "backward(), not between backward() and step()",
                {"unchanged": stuck[:50], "not_in_optimizer": not_held[:50]},
            )
        )
    return findings
