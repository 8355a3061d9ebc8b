"""What the Monitor measures, one quantity per class, as Cockpit separates its quantities
from their display.

Each quantity has a schedule (which steps it measures on), hooks that collect device tensors
during a step (layer outputs and gradients, around `optimizer.step()`), `end_step` that hands
them to the Monitor when `mon.step` is called, and `read` that turns the host numbers back
into its part of the step's record. The Monitor packs every quantity's tensors of a step
into one flat tensor and reads all pending steps back to the host in one sync; nothing here
decides whether a number is good (that is `babysit.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from babysit.nn.activations import ActivationInfo
from babysit.probes import (
    dead_fraction,
    gradient_values,
    histogram_between,
    saturated_fraction,
)
from babysit.train.records import LAYER_FIELDS, all_finite, finite_or_none

__all__ = [
    "HISTOGRAM_VALUES",
    "LayerStatistics",
    "Loss",
    "Quantity",
    "Schedule",
    "UpdateRatios",
    "serial",
]

# Histograms are taken on at most this many values of the sample, in whole examples (2 of
# a 32-channel 32x32 conv output): a bin holding 1/50 of them still has ~1,300 counts, a
# sampling error of ~3%, and the bins of the first conv layer cost 8x less than on 16 images.
HISTOGRAM_VALUES = 1 << 16

Values = dict[Any, list[float]]


class Schedule:
    """Steps 1, 1 + every, 1 + 2 * every, ...: the first step, then every `every`-th."""

    def __init__(self, every: int = 1):
        self.every = every

    def due(self, step: int) -> bool:
        return (step - 1) % self.every == 0


class Quantity:
    """One thing the Monitor measures. Every hook is optional; `step` numbers are 1-based."""

    schedule = Schedule(1)
    active = True  # whether the step in progress is one this quantity measures on

    def begin_step(self, step: int) -> None:
        """Called before step number `step` starts (after the previous `mon.step`)."""
        self.active = self.schedule.due(step)

    def watches(self, i: int) -> bool:
        """Whether it wants layer `i`'s output and gradient on the step in progress."""
        return False

    def on_output(
        self, i: int, module: nn.Module, output: Tensor, part: Tensor, low: Tensor, high: Tensor
    ) -> None: ...

    def on_gradient(self, i: int, part: Tensor, low: Tensor, high: Tensor) -> None: ...

    def before_update(self) -> None: ...

    def after_update(self) -> None: ...

    def end_step(self, loss: Tensor) -> dict[Any, Tensor]:
        """This step's device tensors (any shape; packed by the Monitor)."""
        return {}

    def read(self, record: dict[str, Any], values: Values) -> None:
        """Write this quantity's part of a step's record from its host values."""


class Loss(Quantity):
    """The loss of every step."""

    def end_step(self, loss: Tensor) -> dict[Any, Tensor]:
        return {"loss": loss.detach().reshape(()).float()}

    def read(self, record: dict[str, Any], values: Values) -> None:
        record["loss"] = finite_or_none(values["loss"][0])


class LayerStatistics(Quantity):
    """On scheduled steps, per watched layer: the moments, extremes, histogram, dead and
    saturated fractions of its output (on the first `sample` examples; dead fractions on the
    whole batch), the std of the gradient w.r.t. it, and its weight's std and gradient norm.
    The first pass through a layer in a step is the one measured; layers are read out in
    forward order (`order`: the rank of each layer's first call)."""

    def __init__(
        self,
        layers: list[tuple[str, nn.Module]],
        infos: list[ActivationInfo | None],
        every: int,
        histograms: bool,
        bins: int,
        order: dict[int, int] | None = None,
    ):
        self.layers, self.infos = layers, infos
        self.order = order if order is not None else {}  # layer index -> rank of first call
        self.schedule = Schedule(every)
        self.histograms, self.bins = histograms, bins
        self._probe: dict[Any, Tensor] = {}

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        self._probe = {}

    def watches(self, i: int) -> bool:
        return self.active

    def on_output(self, i, module, output, part, low, high) -> None:
        if (i, "moments") in self._probe:
            return
        # Plain (not NaN-aware) moments are enough: the extremes tell at read-back whether
        # the sample was finite, and the statistics of a non-finite one are dropped.
        info = self.infos[i]
        x = part.float()
        mean, std = mean_std(x)
        low, high = low.float(), high.float()
        self._probe[i, "moments"] = torch.stack([mean, std, low, high])
        if self.histograms:
            if info is not None and info.name in ("tanh", "sigmoid"):
                low, high = (x.new_full((), v) for v in info.output_range)  # no H2D copy
            else:
                wide = high > low  # a constant layer gets a unit-wide range, as activation_stats
                low, high = torch.where(wide, low, low - 0.5), torch.where(wide, high, high + 0.5)
            if x.dim() > 0:
                x = x[: max(1, HISTOGRAM_VALUES // max(1, x[0].numel()))]
            self._probe[i, "histogram"] = histogram_between(x, low, high, self.bins)
            self._probe[i, "histogram_range"] = torch.stack([low, high])
        if info is not None and info.can_die:
            self._probe[i, "dead_fraction"] = dead_fraction(output)
        if info is not None and info.derivative is not None:
            self._probe[i, "saturated_fraction"] = saturated_fraction(part, info)
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() >= 2 and weight.numel() > 1:
            self._probe[i, "weight_std"] = weight.detach().float().std()

    def on_gradient(self, i, part, low, high) -> None:
        if (i, "grad_extremes") not in self._probe:
            self._probe[i, "grad_extremes"] = torch.stack([low, high])
            self._probe[i, "grad_std"] = mean_std(part.float())[1]

    def before_update(self) -> None:
        if self.active:  # before the step changes (or a closure re-computes) the gradients
            self._weight_grad_norms()

    def _weight_grad_norms(self) -> None:
        for i, (_, module) in enumerate(self.layers):
            weight = getattr(module, "weight", None)
            if (
                isinstance(weight, Tensor)
                and weight.dim() >= 2
                and weight.grad is not None
                and (i, "weight_grad_norm") not in self._probe
            ):
                grad = gradient_values(weight.grad)
                self._probe[i, "weight_grad_norm"] = torch.linalg.vector_norm(grad.float())

    def end_step(self, loss: Tensor) -> dict[Any, Tensor]:
        if not self.active:
            return {}
        self._weight_grad_norms()  # without an optimizer step seen: the gradients now
        probe, self._probe = self._probe, {}
        return probe

    def read(self, record: dict[str, Any], values: Values) -> None:
        if not values:
            return  # not a probe step
        layers = []
        unseen = len(self.layers)
        for i in sorted(range(unseen), key=lambda i: self.order.get(i, unseen + i)):
            name, module = self.layers[i]
            if (i, "moments") not in values:
                continue  # not run on this step
            info = self.infos[i]
            moments = values[i, "moments"]
            nonfinite = not all_finite(moments[2:])  # min and max carry any NaN/inf
            layer = dict.fromkeys(LAYER_FIELDS)
            layer.update(
                name=name,
                kind=type(module).__name__,
                activation=info.name if info is not None else None,
                depth=len(layers),
                nonfinite=nonfinite,
                histogram=[],
                grad_nonfinite=not all_finite(values.get((i, "grad_extremes"), [])),
            )
            if not nonfinite:  # the statistics of a sample holding NaN/inf mean nothing
                mean, std, low, high = (finite_or_none(v) for v in moments)
                layer.update(mean=mean, std=std, min=low, max=high)
                if (i, "histogram") in values:
                    layer["histogram"] = [int(c) for c in values[i, "histogram"]]
                    layer["histogram_range"] = values[i, "histogram_range"]
            for key in (
                "dead_fraction",
                "saturated_fraction",
                "grad_std",
                "weight_std",
                "weight_grad_norm",
            ):
                if (i, key) in values:
                    layer[key] = finite_or_none(values[i, key][0])
            layers.append(layer)
        record["layers"] = layers


class UpdateRatios(Quantity):
    """||W_after - W_before|| / ||W|| per parameter the optimizer holds, measured around
    `optimizer.step()` with torch's step hooks (right for any optimizer), on the scheduled
    optimizer steps: counted in optimizer steps, so gradient accumulation or skipped (AMP)
    steps never make it miss its schedule. A ratio lands in the record of the `mon.step` call
    that follows its optimizer step; null where ||W|| was 0 (a zero-initialised bias).
    With `set_roles` (`babysit.train.roles`): each attention's projection weights also as one
    ratio, the norms over all of them (`update_ratio_groups`), and the weights below torch's
    default init norm (`below_default_scale`: ||W|| / that norm)."""

    def __init__(self, every: int):
        self.schedule = Schedule(every)
        self.params: list[tuple[str, nn.Parameter]] = []
        self.optimizer_steps = 0  # optimizer steps seen so far
        self.floors: dict[str, float] = {}  # parameter -> its norm under torch's default init
        self._groups: list[tuple[str, Tensor]] = []  # name, indices of its parameters
        self._roles: dict[str, Any] | None = None  # to record once
        self._before: list[Tensor] | None = None
        self._norms: tuple[Tensor, Tensor, Tensor] | None = None  # ratio, ||dW||, ||W||

    def begin_step(self, step: int) -> None:
        """Scheduled by optimizer steps, not by `mon.step` calls."""

    def set_roles(self, groups: dict[str, list[str]], record: dict[str, Any]) -> None:
        """Measure each group (a name -> parameter names) as one ratio; `record` goes into the
        next record with ratios, as `roles`."""
        index = {name: i for i, (name, _) in enumerate(self.params)}
        device = self.params[0][1].device if self.params else None
        self._groups = []
        for group, names in groups.items():
            held = [index[n] for n in names if n in index]
            if held:
                self._groups.append((group, torch.tensor(held, device=device)))
        self._roles = record

    def before_update(self) -> None:
        if not self.params or self._before is not None:
            return
        if self.schedule.due(self.optimizer_steps + 1):
            with serial(self.params[0][1]):
                self._before = [p.detach().clone() for _, p in self.params]

    def after_update(self) -> None:
        self.optimizer_steps += 1
        if self._before is None:
            return
        before, self._before = self._before, None
        with serial(before[0]):
            changes = torch.stack(
                [
                    torch.linalg.vector_norm(p.detach() - b, dtype=torch.float32)
                    for b, (_, p) in zip(before, self.params, strict=True)
                ]
            )
            norms = torch.stack([torch.linalg.vector_norm(b, dtype=torch.float32) for b in before])
            ratios = changes / norms.clamp_min(torch.finfo(torch.float32).tiny)
            self._norms = (torch.where(norms > 0, ratios, math.nan), changes, norms)

    def end_step(self, loss: Tensor) -> dict[Any, Tensor]:
        if self._norms is None:
            return {}
        (ratios, changes, norms), self._norms = self._norms, None
        out: dict[Any, Any] = {"ratios": ratios, "norms": norms}
        if self._groups:
            eps = torch.finfo(torch.float32).tiny
            with serial(changes):
                for group, held in self._groups:
                    squares = torch.stack([changes[held], norms[held]]).square().sum(dim=1)
                    out["group", group] = squares[0].sqrt() / squares[1].sqrt().clamp_min(eps)
        if self._roles is not None:
            out["roles"], self._roles = self._roles, None
        return out

    def read(self, record: dict[str, Any], values: Values) -> None:
        if "roles" in values:
            record["roles"] = values["roles"]
        if "ratios" not in values:
            return
        record["update_ratios"] = {
            name: finite_or_none(v)
            for (name, _), v in zip(self.params, values["ratios"], strict=True)
        }
        groups = {k[1]: finite_or_none(v[0]) for k, v in values.items() if isinstance(k, tuple)}
        if groups:
            record["update_ratio_groups"] = groups
        scales = {
            name: norm / self.floors[name]
            for (name, _), norm in zip(self.params, values["norms"], strict=True)
            if name in self.floors and norm < self.floors[name]
        }
        if scales:
            record["below_default_scale"] = scales


@contextmanager
def serial(x: Tensor) -> Iterator[None]:
    """Run the Monitor's small reductions on one CPU thread. On a shared CPU, a parallel
    region waits for every torch thread to be scheduled: on a loaded 2-core CPU (our
    measurement), the 90th percentile of 3 sampled aminmax calls went from 52 ms with 2
    threads to 0.46 ms with one.
    Setting the thread count costs ~0.3 us; the user's own ops keep their threads."""
    threads = torch.get_num_threads()
    if x.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (n - 1) standard deviation in two passes (the mean, then the norm of x minus
    it): as exact as torch.std_mean and ~7x faster on a 16-image conv output (0.45 ms vs
    3.5 ms, our measurement on a 2-core CPU)."""
    mean = x.mean()
    if x.numel() < 2:
        return mean, torch.zeros((), device=x.device)
    return mean, torch.linalg.vector_norm(x - mean) / math.sqrt(x.numel() - 1)
