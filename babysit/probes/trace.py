"""What runs after what: one forward pass with hooks on the leaf modules records, for each
call, which module produced its input. This is how the architecture audit tells a hidden
sigmoid from an output one, or two Linear layers with nothing between them, on models
babysit did not build.

A module's input counts as produced by another module only when it is that module's output
tensor itself; a functional op in `forward` (`x.view`, `F.relu`, `a + b`) breaks the chain,
and the audit then says nothing rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from babysit.data.batches import Forward, Inputs, leaves, model_output
from babysit.nn.layers import PASS_THROUGH, is_atomic, is_weight_layer, layer_output
from babysit.probes.hooks import preserved

__all__ = ["MODEL_INPUT", "Call", "Trace", "trace"]

MODEL_INPUT = -1


@dataclass
class Call:
    """One call of a leaf module: its name, the calls that produced its inputs (MODEL_INPUT
    for the model's input, None when unknown), and the shape of its output."""

    index: int
    name: str
    module: nn.Module
    sources: list[int | None]
    output_shape: tuple[int, ...]

    @property
    def is_weight(self) -> bool:
        return is_weight_layer(self.module)


@dataclass
class Trace:
    """The leaf-module calls of one forward pass, in execution order."""

    calls: list[Call]
    output_source: int | None
    output: Tensor | None = None
    first_weight_input: Tensor | None = None
    consumers: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for call in self.calls:
            for source in call.sources:
                if source is not None and source >= 0:
                    self.consumers.setdefault(source, []).append(call.index)

    def weight_calls(self) -> list[Call]:
        return [c for c in self.calls if c.is_weight]

    def next_real(self, index: int, skip: tuple[type, ...] = PASS_THROUGH) -> list[Call]:
        """The calls that consume `index`'s output, looking through `skip` modules."""
        found, frontier, seen = [], list(self.consumers.get(index, [])), set()
        while frontier:
            i = frontier.pop(0)
            if i in seen:
                continue
            seen.add(i)
            call = self.calls[i]
            if isinstance(call.module, skip):
                frontier.extend(self.consumers.get(i, []))
            else:
                found.append(call)
        return found

    def previous_real(self, index: int, skip: tuple[type, ...] = PASS_THROUGH) -> Call | None:
        """The call that produced `index`'s (first) input, looking back through `skip`
        modules; None for the model input or an unknown producer."""
        call = self.calls[index]
        while True:
            source = call.sources[0] if call.sources else None
            if source is None or source < 0:
                return None
            call = self.calls[source]
            if not isinstance(call.module, skip):
                return call

    def output_call(self, skip: tuple[type, ...] = PASS_THROUGH) -> Call | None:
        """The last real call before the model's output (None when the output is not a
        module's output tensor)."""
        if self.output_source is None or self.output_source < 0:
            return None
        call = self.calls[self.output_source]
        if not isinstance(call.module, skip):
            return call
        return self.previous_real(call.index, skip)

    def reaches_output(self, index: int, skip: tuple[type, ...] = PASS_THROUGH) -> bool:
        """Whether `index`'s output becomes the model's output through `skip` modules only."""
        out = self.output_call(skip)
        return out is not None and out.index == index


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that run as one layer: leaves, and layers such as MultiheadAttention that
    run their children's parameters themselves (their children are left out)."""
    found: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if not children or (prefix and is_atomic(module)):
            found.append((prefix, module))
            return
        for name, child in children:
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


def trace(model: nn.Module, x: Inputs, forward: Forward | None = None) -> Trace:
    """Run `x` (a tensor, tuple or dict of inputs) through `model` once (training mode, no
    gradients, model left as found) and record the leaf-module calls and the output, the
    scores read by `babysit.data.batches.model_output` (or `forward`). A layer returning a
    tuple (an RNN's (output, state), attention's (output, weights)) is recorded by its first
    tensor. The first weight layer's input is kept: it is what the network actually sees of
    the data, after any normalization inside the model. Whatever the model raises
    propagates."""
    alive: list[Tensor] = leaves(x)  # keep the tensors alive so that their ids stay unique
    producer: dict[int, int] = {id(t): MODEL_INPUT for t in alive}
    calls: list[Call] = []
    first_input: list[Tensor] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, result: object) -> None:
            output = layer_output(result)
            sources = [producer.get(id(t)) for t in inputs if isinstance(t, Tensor)]
            shape = tuple(output.shape) if isinstance(output, Tensor) else ()
            call = Call(len(calls), name, module, sources, shape)
            if call.is_weight and not first_input and inputs and isinstance(inputs[0], Tensor):
                first_input.append(inputs[0].detach())
            calls.append(call)
            if isinstance(output, Tensor):
                producer[id(output)] = call.index
                alive.append(output)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _leaves(model)]
    try:
        with preserved(model), torch.no_grad():
            model.train()
            output = model_output(model, x, forward)
    finally:
        for h in handles:
            h.remove()
    source = producer.get(id(output)) if isinstance(output, Tensor) else None
    result = output.detach() if isinstance(output, Tensor) else None
    return Trace(calls, source, result, first_input[0] if first_input else None)
