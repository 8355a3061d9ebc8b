"""The Monitor's argument checks and small helpers: a loss or metric given to `mon.step`,
the cadence arguments, the process's rank under torch.distributed."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit._validation import check_scalar
from babysit.errors import UsageError

__all__ = ["check_metric", "positive_int", "rank_and_size", "scalar"]


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of ranks) under torch.distributed, else (0, 1)."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def scalar(value: Tensor | float, what: str, model: nn.Module) -> Tensor:
    """A 0-dim tensor; a Python number goes to the model's device, beside the statistics."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise UsageError(
                f"{what} must be a scalar, got a tensor of shape {tuple(value.shape)}; "
                "pass its mean (loss.mean())"
            )
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        parameter = next(model.parameters(), None)
        return torch.tensor(float(value), device=None if parameter is None else parameter.device)
    raise UsageError(f"{what} must be a tensor or a number, got {type(value).__name__}")


def check_metric(key: str, value: Any) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise UsageError(f"metric {key} must be a scalar, got shape {tuple(value.shape)}")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UsageError(f"metric {key} must be a number or a scalar tensor, got {value!r}")
    if key.endswith("accuracy") and math.isfinite(value) and not 0 <= value <= 1:
        raise UsageError(f"{key} must be a fraction in [0, 1], got {value!r}; divide by 100")


def positive_int(value: Any, what: str) -> int:
    return check_scalar(value, what, int, min=1)
