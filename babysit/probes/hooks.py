"""Forward/backward hooks on chosen layers, removed on exit; and a guard that leaves the
user's model as it was found.

In the manner of fastai's `callback/hook.py`: the hooks live in an object that is a context
manager, and no hook outlives the `with` block, even when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from babysit.nn.activations import activation_info
from babysit.nn.layers import is_parameterised, layer_output, run_by_parent

__all__ = ["Hooks", "preserved", "select_layers"]

ForwardFn = Callable[[str, nn.Module, Tensor], None]
BackwardFn = Callable[[str, nn.Module, Tensor], None]


def select_layers(
    model: nn.Module, layers: Iterable[str | type] | None = None
) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs to probe, in registration (usually forward) order.

    By default every parameterised layer of the kinds in `babysit.nn.layers` (Linear/Conv,
    transformers' Conv1D, Embedding, RNN/LSTM/GRU, MultiheadAttention, normalization) and
    every activation module babysit recognises, but not the children of a layer that runs
    them itself (MultiheadAttention's out_proj); otherwise the modules whose name is in
    `layers` or whose type is one of its types.
    """
    if layers is None:
        inside = run_by_parent(model)
        return [
            (name, m)
            for name, m in model.named_modules()
            if name
            and name not in inside
            and (is_parameterised(m) or activation_info(m) is not None)
        ]
    wanted = list(layers)
    names = {w for w in wanted if isinstance(w, str)}
    types = tuple(w for w in wanted if isinstance(w, type))
    selected = [
        (name, m)
        for name, m in model.named_modules()
        if name and (name in names or (types and isinstance(m, types)))
    ]
    missing = names - {name for name, _ in selected}
    if missing:
        raise ValueError(
            f"no module named {', '.join(sorted(missing))} in the model; "
            f"names are like {', '.join(n for n, _ in list(model.named_modules())[1:6])}"
        )
    return selected


class Hooks:
    """Hooks on `layers`: `forward(name, module, output)` after each forward, and
    `backward(name, module, grad_output)` when the gradient w.r.t. that output is computed.

    The backward hook is a tensor hook on the layer's output, registered from the forward
    hook, so it works with in-place activations where module backward hooks do not. A layer
    returning a tuple (an RNN, attention) is seen through its first tensor
    (`babysit.nn.layers.layer_output`).
    Use as a context manager; `remove()` detaches everything.
    """

    def __init__(
        self,
        layers: Iterable[tuple[str, nn.Module]],
        forward: ForwardFn | None = None,
        backward: BackwardFn | None = None,
    ):
        self.layers = list(layers)
        self._handles: list = []
        self._tensor_handles: list = []
        if forward is None and backward is None:
            raise ValueError("Hooks needs a forward or a backward function")
        for name, module in self.layers:
            self._handles.append(
                module.register_forward_hook(self._make_hook(name, forward, backward))
            )

    def _make_hook(self, name: str, forward: ForwardFn | None, backward: BackwardFn | None):
        def hook(module: nn.Module, _inputs: tuple, result: object) -> None:
            output = layer_output(result)
            if output is None:
                return
            if forward is not None:
                forward(name, module, output)
            if backward is not None and output.requires_grad:
                self._tensor_handles.append(
                    output.register_hook(lambda grad: backward(name, module, grad))
                )

        return hook

    def remove(self) -> None:
        for handle in self._handles + self._tensor_handles:
            handle.remove()
        self._handles.clear()
        self._tensor_handles.clear()

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Run a measurement on `model` and leave it as it was: its train/eval mode, its buffers
    (BatchNorm running statistics) and its parameters' .grad are restored on exit."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for p, grad in grads:
            p.grad = grad
        for m, training in modes.items():
            m.training = training
