"""Callbacks for the training loop: a tiny base class and the lecture's loss abort.

In the manner of Lightning's callbacks: a base with a few well-named methods, one behaviour
per class. A callback stops training with `state.stop(reason)`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from babysit.train.loop import TrainState

# CS231n notes, "Neural Networks Part 3": "if the cost is ever > 3 * original cost, break
# out early" during hyperparameter search.
LOSS_ABORT_FACTOR = 3.0


class Callback:
    """Hooks into `babysit.train.fit`. Every method is optional; `loss` is a device tensor."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_begin(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class LossAbort(Callback):
    """Stop when the loss is NaN/inf or exceeds `factor` x the first step's loss.

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
        self._tripped |= ~torch.isfinite(loss) | (loss > self.factor * self.initial_loss)
        self._window.append(loss)
        if state.step % self.check_every and not state.should_stop:
            return
        window, self._window = self._window, []
        if not bool(self._tripped):
            return
        losses = torch.stack(window).tolist()
        first = float(self.initial_loss)
        index = next(
            i for i, v in enumerate(losses) if not math.isfinite(v) or v > self.factor * first
        )
        step, value = state.step - len(losses) + 1 + index, losses[index]
        if not math.isfinite(value):
            state.stop(f"loss became {value} at step {step}")
        else:
            state.stop(
                f"loss {value:.4g} exceeded {self.factor:g}x the initial loss {first:.4g} "
                f"at step {step}"
            )
