"""Where a NaN/inf first appears in a forward pass: the first layer, in forward order, whose
output holds a non-finite value. Run once, after a loss has gone non-finite (a training
loop's guard tripped, a check's loss read NaN), so that training itself pays nothing for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from babysit.data.batches import Forward, call_model
from babysit.probes.hooks import Hooks, preserved, select_layers

__all__ = ["first_nonfinite_layer"]


def first_nonfinite_layer(
    model: nn.Module, x: Any, forward: Forward | None = None
) -> dict[str, Any] | None:
    """One forward pass of `x` (a tensor, a tuple or a dict of inputs; training mode, no
    gradients, the model left as found; called as `forward(model, x)` when given) with
    hooks on the default layers (every kind of `babysit.nn.layers` and the activations; an
    RNN's output sequence, an attention's output). Returns {"layer", "kind",
    "nonfinite_parameters"} for the first layer whose output holds NaN/inf, the parameters
    being that layer's own non-finite ones (weights set to inf, say); None when every
    output is finite. Whatever the model raises propagates."""
    flags: dict[str, Tensor] = {}  # name -> all finite, in the order of first calls
    modules = dict(select_layers(model))

    def check(name: str, _module: nn.Module, output: Tensor) -> None:
        if name not in flags:
            flags[name] = torch.isfinite(output.detach()).all()

    with preserved(model), Hooks(modules.items(), forward=check), torch.no_grad():
        model.train()
        if forward is not None:
            forward(model, x)
        else:
            call_model(model, x)
    if not flags:
        return None
    finite = torch.stack(list(flags.values())).tolist()  # one read-back
    name = next((n for n, ok in zip(flags, finite, strict=True) if not ok), None)
    if name is None:
        return None
    module = modules[name]
    bad = [
        f"{name}.{p}" for p, value in module.named_parameters() if not torch.isfinite(value).all()
    ]
    return {"layer": name, "kind": type(module).__name__, "nonfinite_parameters": bad}
