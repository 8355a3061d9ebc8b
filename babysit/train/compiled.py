"""The Monitor on a `torch.compile`d model: its probes run outside the compiled graph.

Inside a compiled graph the Monitor's layer hooks return at once (`torch.compiler.
is_compiling()`), so they add nothing to the graph and never break or re-trigger its
compilation. On probe steps the Monitor instead runs the original, eager module once on the
first `sample` examples of that step's input (captured by a pre-hook on the compiled
wrapper, which runs outside the graph), with the model's buffers, gradients, mode and RNG
state restored afterwards: the layer statistics of a compiled model describe its forward
pass after the step's update, on the sample, without gradient statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from babysit.probes import preserved

__all__ = ["SampleCapture", "unwrap_compiled"]


def unwrap_compiled(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the module to watch, the compiled wrapper or None). A DistributedDataParallel (or
    DataParallel) wrapper is looked through too: its `.module` is the model."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        inner, wrapper = unwrap_compiled(model.module)
        return inner, wrapper
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        if isinstance(inner, nn.parallel.DistributedDataParallel | nn.DataParallel):
            inner = inner.module
        return inner, model
    return model, None


def _head(value: Any, sample: int | None) -> Any:
    if isinstance(value, Tensor):
        value = value.detach()
        return value[:sample] if sample is not None and value.dim() > 0 else value
    if isinstance(value, tuple | list):
        return type(value)(_head(v, sample) for v in value)
    if isinstance(value, dict):
        return {k: _head(v, sample) for k, v in value.items()}
    return value


class SampleCapture:
    """Keeps the first `sample` examples of the compiled wrapper's input on wanted steps,
    and reruns the eager module on them."""

    def __init__(self, wrapper: nn.Module, inner: nn.Module, sample: int | None):
        self.wrapper, self.inner, self.sample = wrapper, inner, sample
        self.wanted = False
        self._inputs: tuple[tuple, dict] | None = None
        self._handle = None

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.wrapper.register_forward_pre_hook(self._capture, with_kwargs=True)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.wanted and self._inputs is None and torch.is_grad_enabled():
            self._inputs = (_head(args, self.sample), _head(kwargs, self.sample))

    def rerun(self) -> bool:
        """Run the eager module on the captured sample (the Monitor's hooks see it); False
        when nothing was captured this step."""
        inputs, self._inputs = self._inputs, None
        if inputs is None:
            return False
        devices = [t.device.index for t in self.inner.parameters() if t.is_cuda][:1]
        with preserved(self.inner), torch.random.fork_rng(devices=devices):
            self.inner.train(self.wrapper.training)
            self.inner(*inputs[0], **inputs[1])
        return True
