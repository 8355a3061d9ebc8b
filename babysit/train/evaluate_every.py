"""Measure the model on a fixed batch on a schedule while it trains: one callback for the
error curves of the lab, the checkup's overfit and generalization runs, and any probe that
needs "the model's X on these examples every N steps".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from babysit._validation import check_scalar
from babysit.data.batches import to_device
from babysit.errors import UsageError
from babysit.probes import preserved
from babysit.train.callbacks import Callback, TrainState

__all__ = ["EvaluateEvery", "Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """One measurement: after `step` optimizer steps (0 = before training), in `epoch`
    (0-based, the epoch in progress or just finished), the value `measure` returned."""

    step: int
    epoch: int
    value: Any


class EvaluateEvery(Callback):
    """Call `measure(model, *batch)` before training (`at_start`), every `every` optimizer
    steps, at each epoch's end (`per_epoch`) and after the last step (`at_end`); keep the
    results in `evaluations` (never two at the same step).

    `batch` (tensors, or tuple/dict inputs) moves to the training device once, at the
    start. `mode="eval"` measures in eval mode under `torch.no_grad()`; `mode="train"` in
    train mode (batch statistics for BatchNorm) under no_grad, with the model's buffers,
    mode and gradients restored after; `mode=None` leaves the mode as the loop has it.
    `stop_when(value)` may return a reason (or True) to stop the run.

    For example, the training error on 512 examples every 5 steps, stopping at 2%:

        EvaluateEvery(lambda m, x, y: float((m(x).argmax(1) != y).float().mean()),
                      (x[:512], y[:512]), every=5,
                      stop_when=lambda error: error <= 0.02 and "reached the target")
    """

    def __init__(
        self,
        measure: Callable[..., Any],
        batch: Sequence[Tensor] = (),
        *,
        every: int | None = None,
        per_epoch: bool = False,
        at_start: bool = True,
        at_end: bool = False,
        mode: Literal["eval", "train"] | None = "eval",
        stop_when: Callable[[Any], str | bool | None] | None = None,
    ):
        check_scalar(every, "every", int, min=1, allow_none=True)
        if mode not in ("eval", "train", None):
            raise UsageError(f"mode must be 'eval', 'train' or None, got {mode!r}")
        self.measure = measure
        self.batch = tuple(batch)
        self.every = every
        self.per_epoch = per_epoch
        self.at_start = at_start
        self.at_end = at_end
        self.mode = mode
        self.stop_when = stop_when
        self.evaluations: list[Evaluation] = []
        self.stop_reason: str | None = None
        self._batch: tuple[Tensor, ...] = self.batch

    @property
    def steps(self) -> list[int]:
        return [e.step for e in self.evaluations]

    @property
    def values(self) -> list[Any]:
        return [e.value for e in self.evaluations]

    def evaluate(self, model: nn.Module) -> Any:
        """The measurement now, under the callback's mode, leaving the model as it was."""
        if self.mode is None:
            with torch.no_grad():
                return self.measure(model, *self._batch)
        if self.mode == "eval":
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return self.measure(model, *self._batch)
            finally:
                model.train(was_training)
        with preserved(model), torch.no_grad():
            model.train()
            return self.measure(model, *self._batch)

    def _record(self, state: TrainState) -> None:
        if self.evaluations and self.evaluations[-1].step == state.step:
            return
        value = self.evaluate(state.model)
        self.evaluations.append(Evaluation(state.step, state.epoch, value))
        if self.stop_when is not None and self.stop_reason is None:
            reason = self.stop_when(value)
            if reason:
                self.stop_reason = reason if isinstance(reason, str) else f"stopped at {value!r}"
                state.stop(self.stop_reason)

    def on_train_begin(self, state: TrainState) -> None:
        self.evaluations, self.stop_reason = [], None
        self._batch = tuple(to_device(t, state.device) for t in self.batch)
        if self.at_start:
            self._record(state)

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        if self.every is not None and state.step % self.every == 0:
            self._record(state)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.per_epoch:
            self._record(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.at_end:
            self._record(state)
