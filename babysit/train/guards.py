"""The Monitor's guards: quantities that raise an alert, once per run, when the loss is
non-finite (naming where the first non-finite value appeared) or has exploded.

Both apply the lecture's divergence rule (`babysit.train.divergence`). An alert is a dict
with "guard" and "message", appended to the record's "alerts"; the Monitor collects them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from babysit.train.divergence import LOSS_ABORT_FACTOR, divergence_reason
from babysit.train.quantities import Quantity, Values
from babysit.train.records import all_finite

__all__ = ["ExplosionGuard", "NonFiniteGuard"]


def _alert(record: dict[str, Any], guard: str, **details: Any) -> None:
    record.setdefault("alerts", []).append({"guard": guard, **details})


class NonFiniteGuard(Quantity):
    """Every step, the min and max of each guarded layer's output and of the gradient w.r.t.
    it (NaN propagates through both); when the loss is NaN/inf, the alert names the first
    non-finite value of the run of consecutive steps that led to it: of a step, the first
    layer output in forward order (`order`, the rank of each layer's first call), else the
    deepest gradient.

    `guarded` are the indices of the layers that can turn finite values into NaN/inf: a
    recognised activation cannot (its function and its derivative are finite on finite
    inputs), so the Monitor leaves activations out, which halves the per-step work on a usual
    Linear/Conv -> activation net without losing precision.
    """

    def __init__(
        self,
        names: list[str],
        guarded: list[int],
        sample: int | None,
        compiled: bool = False,
        order: dict[int, int] | None = None,
    ):
        self.names, self.guarded, self.sample = names, guarded, sample
        # layer index -> rank of its first call in a step, filled in by the Monitor's hooks
        self.order = order if order is not None else {}
        self.compiled = compiled  # layer outputs inside a compiled graph are not seen
        self._is_guarded = [i in guarded for i in range(len(names))]
        self._outputs: dict[int, tuple[Tensor, Tensor]] = {}
        self._grads: dict[int, tuple[Tensor, Tensor]] = {}
        self._zero: Tensor | None = None
        self._onset: tuple[int, str, str] | None = None
        self.tripped = False

    def begin_step(self, step: int) -> None:
        self._outputs, self._grads = {}, {}

    def watches(self, i: int) -> bool:
        return self._is_guarded[i]

    def on_output(self, i, module, output, part, low, high) -> None:
        _merge_extremes(self._outputs, i, low, high)

    def on_gradient(self, i, part, low, high) -> None:
        _merge_extremes(self._grads, i, low, high)

    def end_step(self, loss: Tensor) -> dict[Any, Tensor]:
        """[min, max] of each guarded layer's output, then of its gradient (0 if not seen)."""
        loss = loss.detach().reshape(()).float()
        if not self.guarded:
            return {"loss": loss}
        if self._zero is None or self._zero.device != loss.device:
            self._zero = torch.zeros((), device=loss.device)
        pairs = (self._zero, self._zero)
        values = [
            v.float()
            for seen in (self._outputs, self._grads)
            for i in self.guarded
            for v in seen.get(i, pairs)
        ]
        return {"loss": loss, "extremes": torch.stack(values)}

    def read(self, record: dict[str, Any], values: Values) -> None:
        step, loss = record["step"], values["loss"][0]
        n = len(self.guarded)
        extremes = values.get("extremes", [])
        bad_output = [not all_finite(extremes[2 * j : 2 * j + 2]) for j in range(n)]
        bad_grad = [not all_finite(extremes[2 * (n + j) : 2 * (n + j) + 2]) for j in range(n)]
        # The run of consecutive steps with a non-finite layer value: its first step is where
        # the trouble started (a NaN gradient at step k makes every output NaN from step k+1).
        unseen = len(self.names)
        forward = sorted(range(n), key=lambda j: self.order.get(self.guarded[j], unseen + j))
        first_output = next((j for j in forward if bad_output[j]), None)
        # Backward runs from the loss towards the input: the first gradient to go non-finite
        # is the deepest one.
        last_grad = next((j for j in reversed(forward) if bad_grad[j]), None)
        if first_output is not None:
            now = (step, self.names[self.guarded[first_output]], "output")
        elif last_grad is not None:
            now = (step, self.names[self.guarded[last_grad]], "gradient")
        else:
            now = None
        self._onset = None if now is None else (self._onset or now)
        if not math.isfinite(loss) and not self.tripped:
            self.tripped = True
            _alert(record, "nonfinite_loss", **self._describe(step, loss))

    def _describe(self, step: int, loss: float) -> dict[str, Any]:
        head = f"{divergence_reason(loss, None)} at step {step}"
        onset = self._onset
        if self.compiled and onset is None:
            return dict(
                message=f"{head}: the layers run inside a torch.compile graph, where they are "
                "not watched; run the model uncompiled to find the layer",
                layer=None,
                where="loss",
                onset_step=step,
            )
        if onset is None or (onset[0] == step and onset[2] == "gradient"):
            # NaN gradients on the same step as a NaN loss flowed back from the loss itself.
            sampled = "" if self.sample is None else f" on the {self.sample} sampled examples"
            return dict(
                message=f"{head}: every monitored layer output was finite{sampled}, so the "
                "loss function (or an example outside the sample) produced it",
                layer=None,
                where="loss",
                onset_step=step,
            )
        onset_step, layer, where = onset
        what = (
            f"output of {layer}" if where == "output" else f"gradient w.r.t. the output of {layer}"
        )
        return dict(
            message=f"{head}: the first non-finite value was the {what} at step {onset_step}",
            layer=layer,
            where=where,
            onset_step=onset_step,
        )


class ExplosionGuard(Quantity):
    """Every step: a finite loss above `factor` x the first step's (positive) loss."""

    def __init__(self, factor: float = LOSS_ABORT_FACTOR):
        self.factor = factor
        self.initial_loss: float | None = None
        self.tripped = False

    def read(self, record: dict[str, Any], values: Values) -> None:
        step, loss = record["step"], record["loss"]
        if step == 1 and loss is not None:
            self.initial_loss = loss
        if loss is None or self.tripped:
            return  # a non-finite loss is the other guard's
        reason = divergence_reason(loss, self.initial_loss, self.factor)
        if reason is not None:
            self.tripped = True
            _alert(
                record,
                "loss_exploded",
                message=f"{reason} at step {step}",
                initial_loss=self.initial_loss,
                factor=self.factor,
            )


def _merge_extremes(
    seen: dict[int, tuple[Tensor, Tensor]], i: int, low: Tensor, high: Tensor
) -> None:
    """Keep a layer's min and max for this step, merged with an earlier pass through it in
    the same step (gradient accumulation, an optimizer closure)."""
    previous = seen.get(i)
    if previous is None:
        seen[i] = (low, high)
    else:
        seen[i] = (torch.minimum(previous[0], low), torch.maximum(previous[1], high))
