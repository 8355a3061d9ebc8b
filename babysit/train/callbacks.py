"""Callbacks for the training loop: a tiny base class, what it sees, and the lecture's abort.

In the manner of Lightning's callbacks: a base with a few well-named methods, one behaviour
per class. A callback sees a `TrainState` and stops training with `state.stop(reason)`;
`fit` returns the `History`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from babysit.train.divergence import LOSS_ABORT_FACTOR, diverged, divergence_reason

__all__ = ["LOSS_ABORT_FACTOR", "Callback", "History", "LossAbort", "TrainState"]


@dataclass
class History:
    """What one `fit` produced: per-step losses and per-epoch metrics, as host numbers."""

    step_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def last(self, key: str) -> float | None:
        for record in reversed(self.epochs):
            if key in record:
                return record[key]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"step_loss": self.step_loss, "epochs": self.epochs, "stop_reason": self.stop_reason}


@dataclass
class TrainState:
    """What callbacks see: the model, the optimizer, counters and the history so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    device: torch.device
    history: History
    epoch: int = 0
    step: int = 0
    should_stop: bool = False
    batch: tuple[Tensor, Tensor] | None = None

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after this step; the first reason given is kept."""
        if not self.should_stop:
            self.should_stop = True
            self.history.stop_reason = reason


class Callback:
    """Hooks into `babysit.train.fit`. Every method is optional; `loss` is a device tensor."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_begin(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class LossAbort(Callback):
    """Stop when the loss diverges (`babysit.train.divergence`: NaN/inf, or above `factor` x
    the first step's loss).

    The comparison happens on the device; its result is read back every `check_every` steps
    (1 by default: a diverging run then costs only the steps it took to diverge; larger
    values avoid a host sync per step on a GPU). The reason is left in `state.stop_reason`.
    """

    def __init__(self, factor: float = LOSS_ABORT_FACTOR, check_every: int = 1):
        if factor <= 1:
            raise ValueError(f"LossAbort factor must be > 1, got {factor}")
        self.factor = factor
        self.check_every = max(1, int(check_every))
        self.initial_loss: Tensor | None = None
        self._tripped: Tensor | None = None
        self._window: list[Tensor] = []

    def on_train_begin(self, state: TrainState) -> None:
        self.initial_loss = None
        self._tripped = None
        self._window = []

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        loss = loss.detach()
        if self.initial_loss is None:
            self.initial_loss = loss.clone()
            self._tripped = torch.zeros((), dtype=torch.bool, device=loss.device)
        self._tripped |= diverged(loss, self.initial_loss, self.factor)
        self._window.append(loss)
        if state.step % self.check_every and not state.should_stop:
            return
        window, self._window = self._window, []
        if not bool(self._tripped):
            return
        first = float(self.initial_loss)
        first = first if math.isfinite(first) else None
        for index, value in enumerate(torch.stack(window).tolist()):
            reason = divergence_reason(value, first, self.factor)
            if reason is not None:
                state.stop(f"{reason} at step {state.step - len(window) + 1 + index}")
                return
