"""A small, plain training loop with callbacks: what the checkup, the search and the lab use.

`fit(model, train, val, epochs=..., lr=...)` trains in place and returns a History. Losses
stay on the device during an epoch and are read back once at its end, so the loop itself
adds no host synchronisation per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from babysit.data.batches import (
    Forward,
    Inputs,
    collate,
    in_memory,
    model_output,
    select,
    to_device,
)
from babysit.errors import UsageError
from babysit.train.callbacks import Callback, History, TrainState
from babysit.train.optimizers import DEFAULT_MOMENTUM, make_optimizer

__all__ = ["correct_count", "default_device", "evaluate", "fit"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def correct_count(logits: Tensor, y: Tensor) -> Tensor | None:
    """Number of correct predictions as a device tensor, or None when y are not class labels.

    Integer class labels are read with argmax over the logits, or with logit > 0 for a single
    output and 0/1 labels. Float targets (regression, soft labels) have no accuracy.
    (`babysit.checks.task.accuracy` is the fraction, with one-hot targets too.)
    """
    if y.is_floating_point() or y.is_complex() or logits.dim() != 2 or y.dim() != 1:
        return None
    if logits.shape[1] > 1:
        return (logits.argmax(dim=1) == y).sum()
    return ((logits[:, 0] > 0).long() == y).sum()


def _batches(
    data: Dataset | Sequence[Tensor],
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator,
    device: torch.device,
) -> Callable[[], Iterator[tuple[Inputs, Tensor]]]:
    """An epoch iterator factory. In-memory tensors (inputs a tensor, tuple or dict of them)
    are moved to the device once and indexed by a seeded permutation (far faster than a
    DataLoader for small data); any other Dataset goes through a DataLoader whose items may
    hold tuple or dict inputs (babysit.data.batches.collate)."""
    pair = in_memory(data)
    if pair is not None:
        x, y = to_device(pair[0], device), pair[1].to(device)
        n = len(y)

        def tensor_epoch() -> Iterator[tuple[Inputs, Tensor]]:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            order = order.to(device)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                yield select(x, index), y[index]

        return tensor_epoch
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate
    )

    def loader_epoch() -> Iterator[tuple[Inputs, Tensor]]:
        for xb, yb in loader:
            yield to_device(xb, device), yb.to(device, non_blocking=True)

    return loader_epoch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    batch_size: int = 512,
    device: torch.device | None = None,
    forward: Forward | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy (when the targets are class labels) of `model` on `data`, in
    eval mode; the model's mode is restored afterwards. `forward` as in `fit`."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n, has_accuracy = 0, True
    try:
        for xb, yb in _batches(data, batch_size, False, torch.Generator(), device)():
            logits = model_output(model, xb, forward)
            total_loss += loss_fn(logits, yb).double() * len(yb)
            hits = correct_count(logits, yb)
            has_accuracy = has_accuracy and hits is not None
            if hits is not None:
                correct += hits
            n += len(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise UsageError("cannot evaluate on an empty data set")
    result = {"loss": float(total_loss) / n}
    if has_accuracy:
        result["accuracy"] = float(correct) / n
    return result


def fit(
    model: nn.Module,
    train: Dataset | Sequence[Tensor],
    val: Dataset | Sequence[Tensor] | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-2,
    optimizer: str | torch.optim.Optimizer = "sgd",
    weight_decay: float = 0.0,
    momentum: float = DEFAULT_MOMENTUM,
    batch_size: int = 64,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    shuffle: bool = True,
    forward: Forward | None = None,
) -> History:
    """Train `model` in place; return its History.

    `train`/`val` are TensorDatasets, (X, y) tensor pairs or any Dataset of (x, y) items.
    `optimizer` is a name (see make_optimizer) or a ready optimizer over the model's
    parameters. Inputs and outputs may be structured (babysit.data.batches.model_output);
    `forward(model, inputs) -> scores` replaces that call where it differs.
    The run is reproducible for a given `seed`: it seeds torch's global RNG
    (dropout) and the shuffling. `max_steps` bounds the total number of optimizer steps.
    """
    if epochs < 1 and max_steps is None:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    loss_fn = loss_fn or nn.functional.cross_entropy
    train_epoch = _batches(train, batch_size, shuffle, generator, device)
    history = History()
    state = TrainState(model, optimizer, loss_fn, device, history)

    for cb in callbacks:
        cb.on_train_begin(state)
    budget = max_steps if max_steps is not None else math.inf
    epoch_count = epochs if max_steps is None else max(epochs, 1 << 30)
    for epoch in range(epoch_count):
        if state.should_stop or state.step >= budget:
            break
        state.epoch = epoch
        model.train()
        for cb in callbacks:
            cb.on_epoch_begin(state)
        losses: list[Tensor] = []
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, has_accuracy = 0, True
        for xb, yb in train_epoch():
            state.batch = (xb, yb)
            for cb in callbacks:
                cb.on_batch_begin(state)
            logits = model_output(model, xb, forward)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            detached = loss.detach()
            losses.append(detached)
            hits = correct_count(logits.detach(), yb)
            has_accuracy = has_accuracy and hits is not None
            if hits is not None:
                correct += hits
            seen += len(yb)
            for cb in callbacks:
                cb.on_batch_end(state, detached)
            if state.should_stop or state.step >= budget:
                break
        if not losses:
            break
        step_losses = torch.stack(losses).tolist()
        history.step_loss.extend(step_losses)
        finite = [v for v in step_losses if math.isfinite(v)]
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "step": state.step,
            "train_loss": sum(finite) / len(finite) if finite else math.nan,
        }
        if has_accuracy and seen:
            metrics["train_accuracy"] = float(correct) / seen
        if val is not None and not state.should_stop:
            val_metrics = evaluate(model, val, loss_fn, device=device, forward=forward)
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        history.epochs.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
    state.batch = None
    for cb in callbacks:
        cb.on_train_end(state)
    return history
