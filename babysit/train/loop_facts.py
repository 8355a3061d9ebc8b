"""What only the training loop can get wrong, measured around the scheduled optimizer steps:
whether gradients were zeroed, the model's mode, the learning rate, and the trainable
parameters the optimizer does not hold. Recorded as the "loop" field; `babysit.checks`
turns it into GRAD_ACCUMULATING, EVAL_MODE_TRAINING, PARAMS_NOT_UPDATED and LR_TOO_LOW.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from babysit.nn.layers import DROPOUT
from babysit.probes import gradient_values
from babysit.train.quantities import Quantity, Schedule, Values

__all__ = ["MODE_LAYERS", "LoopFacts"]

# Layers that compute something different in train and eval mode (the lecture's dropout and
# batch normalization); a model without any is not affected by its mode.
MODE_LAYERS = (*DROPOUT, nn.modules.batchnorm._BatchNorm)


class LoopFacts(Quantity):
    """On the scheduled optimizer steps (as `UpdateRatios`): `model.training`, how many
    dropout/BatchNorm modules were in train mode, and the largest learning rate of the
    optimizer's groups; on the backward pass that follows such a step, whether a watched
    layer's weight still held a non-zero gradient from before it (never zeroed: the
    gradient hook on a layer's output runs before its weight's gradient is accumulated)."""

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]], every: int):
        self.model = model
        self.schedule = Schedule(every)
        self.weights: dict[int, Tensor] = {}
        self._all_weights = {
            i: module.weight
            for i, (_, module) in enumerate(layers)
            if isinstance(getattr(module, "weight", None), Tensor) and module.weight.requires_grad
        }
        self.names = [name for name, _ in layers]
        self.mode_layers = [m for m in model.modules() if isinstance(m, MODE_LAYERS)]
        self.optimizer: torch.optim.Optimizer | None = None
        self.not_in_optimizer: list[str] = []
        self.frozen: list[str] = []  # in the optimizer but requires_grad=False
        self.optimizer_steps = 0
        self._facts: dict[str, Any] | None = None
        self._armed: set[int] = set()  # layers whose next backward is checked
        self._stale: dict[int, Tensor | None] = {}  # None: no gradient held at all
        self._reported_params = False

    def set_optimizer(self, optimizer: torch.optim.Optimizer, owned: set[int]) -> None:
        self.optimizer = optimizer
        # Only the optimizer's weights are checked: zero_grad() never clears the others.
        self.weights = {i: w for i, w in self._all_weights.items() if id(w) in owned}
        named = list(self.model.named_parameters())
        self.not_in_optimizer = [n for n, p in named if p.requires_grad and id(p) not in owned]
        self.frozen = [n for n, p in named if not p.requires_grad and id(p) in owned]
        self._reported_params = False

    def begin_step(self, step: int) -> None:
        """Scheduled by optimizer steps, not by `mon.step` calls."""

    def watches(self, i: int) -> bool:
        return i in self._armed

    def on_gradient(self, i, part, low, high) -> None:
        self._armed.discard(i)
        grad = self.weights[i].grad
        if grad is None:
            self._stale[i] = None
            return
        values = gradient_values(grad.detach())  # a sparse gradient: its stored values
        self._stale[i] = (values.abs() > 0).any()

    def before_update(self) -> None:
        if self.optimizer is None or not self.schedule.due(self.optimizer_steps + 1):
            return
        self._facts = {
            "optimizer_step": self.optimizer_steps + 1,
            "training": self.model.training,
            "mode_layers": len(self.mode_layers),
            "mode_layers_training": sum(m.training for m in self.mode_layers),
            "lr": max(float(group["lr"]) for group in self.optimizer.param_groups),
        }

    def after_update(self) -> None:
        self.optimizer_steps += 1
        if self._facts is not None and self._facts["optimizer_step"] == self.optimizer_steps:
            self._armed = set(self.weights)

    def end_step(self, loss: Tensor) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        if self._facts is not None and self.optimizer_steps >= self._facts["optimizer_step"]:
            out["facts"], self._facts = self._facts, None
        if self._stale:  # the backward after a scheduled step ran (layers it missed: unchecked)
            self._armed = set()
            held = sorted(i for i, s in self._stale.items() if s is not None)
            out["checked"] = len(self._stale)
            out["held"] = [self.names[i] for i in held]
            if held:
                out["stale"] = torch.stack([self._stale[i] for i in held]).float()
            self._stale = {}
        if self.optimizer is not None and not self._reported_params:
            self._reported_params = True
            out["not_in_optimizer"] = self.not_in_optimizer
            out["frozen"] = self.frozen
        return out

    def read(self, record: dict[str, Any], values: Values) -> None:
        if not values:
            return
        loop: dict[str, Any] = dict(values.get("facts") or {})
        if "checked" in values:
            stale = values.get("stale", [])
            loop["stale_gradient"] = [
                name for name, s in zip(values["held"], stale, strict=True) if s
            ]
        if "not_in_optimizer" in values:
            loop["not_in_optimizer"] = values["not_in_optimizer"]
            loop["frozen"] = values["frozen"]
        record["loop"] = loop
