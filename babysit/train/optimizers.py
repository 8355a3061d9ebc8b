"""Optimizers by name: one registry that `make_optimizer`, the CLI's help and its errors read."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from babysit.errors import UsageError

__all__ = [
    "DEFAULT_MOMENTUM",
    "OPTIMIZERS",
    "OPTIMIZER_REGISTRY",
    "OptimizerSpec",
    "make_optimizer",
    "optimizer_help",
    "unknown_optimizer",
]

# SGD momentum for "momentum" and "nesterov": the usual 0.9 (CS231n notes, Part 3).
DEFAULT_MOMENTUM = 0.9


@dataclass(frozen=True)
class OptimizerSpec:
    """One named optimizer: what it is, in words, and how to build it."""

    name: str
    description: str
    build: Callable[..., torch.optim.Optimizer]  # (params, lr, weight_decay, momentum)


_SPECS = (
    OptimizerSpec(
        "sgd", "plain SGD", lambda ps, lr, wd, m: torch.optim.SGD(ps, lr=lr, weight_decay=wd)
    ),
    OptimizerSpec(
        "momentum",
        "SGD with momentum",
        lambda ps, lr, wd, m: torch.optim.SGD(ps, lr=lr, momentum=m, weight_decay=wd),
    ),
    OptimizerSpec(
        "nesterov",
        "SGD with Nesterov momentum",
        lambda ps, lr, wd, m: torch.optim.SGD(
            ps, lr=lr, momentum=m, nesterov=True, weight_decay=wd
        ),
    ),
    OptimizerSpec(
        "adam", "Adam", lambda ps, lr, wd, m: torch.optim.Adam(ps, lr=lr, weight_decay=wd)
    ),
    OptimizerSpec(
        "adamw",
        "AdamW, decoupled weight decay",
        lambda ps, lr, wd, m: torch.optim.AdamW(ps, lr=lr, weight_decay=wd),
    ),
    OptimizerSpec(
        "rmsprop", "RMSprop", lambda ps, lr, wd, m: torch.optim.RMSprop(ps, lr=lr, weight_decay=wd)
    ),
)
OPTIMIZER_REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}

# The names, in the registry's order (search spaces and the checkup validate against it).
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_REGISTRY)


def optimizer_help() -> str:
    """The names and what each is, for help texts: "sgd (plain SGD), momentum (...), ..."."""
    return ", ".join(f"{s.name} ({s.description})" for s in OPTIMIZER_REGISTRY.values())


def unknown_optimizer(name: Any) -> UsageError:
    """The one error for an optimizer name that is not in the registry."""
    return UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_optimizer(
    name: str,
    params,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = DEFAULT_MOMENTUM,
) -> torch.optim.Optimizer:
    """An optimizer by name: sgd, momentum, nesterov, adam, adamw or rmsprop."""
    spec = OPTIMIZER_REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_optimizer(name)
    if not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"learning rate must be a positive number, got {lr!r}")
    if weight_decay < 0:
        raise UsageError(f"weight decay must be >= 0, got {weight_decay!r}")
    return spec.build(params, lr, weight_decay, momentum)
