"""Callbacks of the loop that measure a run without judging it: the learning-rate range test
and the update/weight ratio of every step. The checks read them; the lab can too."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from babysit.nn.layers import EMBEDDING, layer_weights, parameterised_layers, weight_matrix
from babysit.train.callbacks import Callback, TrainState

__all__ = [
    "LR_RANGE_BETA",
    "LR_RANGE_DIVERGE",
    "LR_RANGE_END",
    "LR_RANGE_START",
    "LRRangeTest",
    "UpdateRatioLog",
]

# fastai's lr_find defaults (fastai/callback/schedule.py): 1e-7 to 10 in 100 steps, stop
# when the smoothed loss exceeds 4x its best; its running average uses beta = 0.98.
LR_RANGE_START = 1e-7
LR_RANGE_END = 10.0
LR_RANGE_DIVERGE = 4.0
LR_RANGE_BETA = 0.98


class LRRangeTest(Callback):
    """Set an exponentially growing learning rate before each step; record the loss after;
    stop when the loss is not finite or its running average passes `diverge` x its best."""

    def __init__(
        self,
        start: float = LR_RANGE_START,
        end: float = LR_RANGE_END,
        steps: int = 100,
        diverge: float = LR_RANGE_DIVERGE,
    ):
        self.start, self.end, self.steps, self.diverge = start, end, max(steps, 2), diverge
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._average, self._best = 0.0, math.inf

    def on_batch_begin(self, state: TrainState) -> None:
        lr = self.start * (self.end / self.start) ** (len(self.lrs) / (self.steps - 1))
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        self.lrs.append(lr)

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        value = float(loss)
        self.losses.append(value)
        if not math.isfinite(value):
            state.stop(f"loss became {value} at lr {self.lrs[-1]:.3g}")
            return
        self._average = LR_RANGE_BETA * self._average + (1 - LR_RANGE_BETA) * value
        smoothed = self._average / (1 - LR_RANGE_BETA ** len(self.losses))
        self._best = min(self._best, smoothed)
        if smoothed > self.diverge * self._best:
            state.stop(f"loss diverged at lr {self.lrs[-1]:.3g}")


class UpdateRatioLog(Callback):
    """Per layer, ||W_after - W_before|| / ||W_before|| at every step (device tensors, read
    back once at the end), for the layers whose weights train. Every kind of
    `babysit.nn.layers` counts; a layer's weights (`layer_weights`: an LSTM's input and
    recurrent matrices, an attention's input and output projections, a norm's gain and
    shift) are one ratio, the norms taken over all of them together. An embedding's ratio is
    taken over the rows the step changed: a step only looks up the tokens of its batch, so
    over the whole table the ratio would shrink with the vocabulary, not with the rate.
    `groups` (a name -> the names of layers) measures those layers as one, under that name:
    the projections of one attention (`babysit.probes.graph`), as a fused qkv projection is."""

    def __init__(self, model: nn.Module, groups: dict[str, list[str]] | None = None):
        group_of = {layer: group for group, layers in (groups or {}).items() for layer in layers}
        merged: dict[str, tuple[list[Tensor], list[bool]]] = {}
        floors: dict[str, float] = {}
        for name, module in parameterised_layers(model):
            weights = [p for _, p in layer_weights(module) if p.requires_grad]
            if weights:
                key = group_of.get(name, name)
                entry = merged.setdefault(key, ([], []))
                entry[0].extend(weights)
                entry[1].extend([isinstance(module, EMBEDDING)] * len(weights))
                floors[key] = floors.get(key, 0.0) + default_square_norm(module)
        self.layers: list[tuple[str, list[Tensor]]] = [(n, w) for n, (w, _) in merged.items()]
        self._floors = [math.sqrt(floors[n]) for n, _ in self.layers]
        tables = [t for _, (_, kinds) in merged.items() for t in kinds]
        self._flat = [p for _, group in self.layers for p in group]
        self._sizes = [len(group) for _, group in self.layers]
        self._tables = tables
        self._before: list[Tensor] = []
        self._ratios: list[Tensor] = []

    def on_batch_begin(self, state: TrainState) -> None:
        self._before = [w.detach().clone() for w in self._flat]

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        if self.layers:
            self._ratios.append(
                grouped_update_ratios(self._before, self._flat, self._sizes, self._tables)
            )

    def medians(self) -> dict[str, float]:
        if not self._ratios:
            return {}
        ratios = torch.stack(self._ratios)
        ratios = torch.where(torch.isfinite(ratios), ratios, torch.full_like(ratios, math.nan))
        medians = ratios.nanmedian(dim=0).values.tolist()
        return {name: m for (name, _), m in zip(self.layers, medians, strict=True)}

    def below_default_scale(self) -> dict[str, float]:
        """Per layer, ||W|| now against the norm torch's default init gives its weight
        matrices (`default_square_norm`), where that is larger: 1 for a layer at or above
        that scale and for the kinds without one (embeddings, recurrent layers, norms)."""
        scales = {}
        for (name, weights), floor in zip(self.layers, self._floors, strict=True):
            norm = math.sqrt(sum(float(w.detach().float().square().sum()) for w in weights))
            scales[name] = min(1.0, norm / floor) if floor > 0 else 1.0
        return scales


def default_square_norm(module: nn.Module) -> float:
    """||W||^2 of a weight layer under torch's default init, kaiming_uniform_(a=sqrt(5)):
    U(-b, b), b = 1/sqrt(fan_in), variance 1/(3 fan_in), so out/3 over the out x fan_in
    entries; 0 for the other kinds."""
    weight = weight_matrix(module)
    return weight.shape[0] / 3 if weight is not None else 0.0


def _squares(before: Tensor, after: Tensor, table: bool) -> Tensor:
    """[||dW||^2, ||W||^2], the latter over the changed rows only for a lookup table (a
    mask, not an index: no host sync)."""
    change = after.detach().float() - before.float()
    if not table:
        return torch.stack([change.square().sum(), before.float().square().sum()])
    changed = change.ne(0).flatten(1).any(dim=1)
    rows = before.float().flatten(1).square().sum(dim=1)
    return torch.stack([change.square().sum(), (rows * changed).sum()])


def grouped_update_ratios(
    before: list[Tensor], after: list[Tensor], sizes: list[int], tables: list[bool] | None = None
) -> Tensor:
    """||dW|| / ||W|| per group of consecutive tensors (`sizes` of them each), the norms over
    the whole group: for one tensor a group, `babysit.probes.update_ratios`. A tensor marked
    in `tables` (an embedding's) counts ||W|| over its changed rows; a group that did not
    change at all gets 0."""
    eps = torch.finfo(torch.float32).tiny
    tables = tables or [False] * len(before)
    squares = torch.stack(
        [_squares(b, a, t) for b, a, t in zip(before, after, tables, strict=True)]
    )
    groups = torch.repeat_interleave(
        torch.arange(len(sizes), device=squares.device),
        torch.tensor(sizes, device=squares.device),
    )
    sums = torch.zeros(len(sizes), 2, device=squares.device).index_add_(0, groups, squares)
    return sums[:, 0].sqrt() / sums[:, 1].sqrt().clamp_min(eps)
