"""The lecture's divergence rule: give up on a run whose loss is NaN/inf or above 3x its first.

CS231n notes, "Neural Networks Part 3" (hyperparameter search): "if the cost is ever > 3 *
original cost, break out early". One rule, used by the loop's `LossAbort`, the Monitor's
guards and the search's `LossRatioPruner`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOSS_ABORT_FACTOR", "diverged", "divergence_reason"]

# CS231n notes, Part 3: "if the cost is ever > 3 * original cost, break out early".
LOSS_ABORT_FACTOR = 3.0


def diverged(loss: Tensor, initial: Tensor, factor: float = LOSS_ABORT_FACTOR) -> Tensor:
    """The rule on the device, as a bool tensor: `loss` is NaN/inf, or `initial` is a positive
    first loss and `loss` exceeds `factor` x it. A first loss <= 0 (a log-likelihood that can
    be negative) gives no yardstick: only the non-finite half applies."""
    return ~torch.isfinite(loss) | ((initial > 0) & (loss > factor * initial))


def divergence_reason(
    loss: float, initial: float | None, factor: float = LOSS_ABORT_FACTOR
) -> str | None:
    """Why the run diverged, in words (the callers add "at step N"), or None."""
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if initial is not None and initial > 0 and loss > factor * initial:
        return f"loss {loss:.4g} exceeded {factor:g}x the initial loss {initial:.4g}"
    return None
