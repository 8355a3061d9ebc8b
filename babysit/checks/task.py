"""What the loss expects, so that the checks can adapt to it or step aside.

Cross-entropy and NLL take class labels (and give ln(C) for an uninformed model); BCE takes
targets in [0, 1] (ln 2); MSE, L1 and Huber take real targets; any other callable is "other",
and the checks that need to know the loss's meaning skip themselves instead of misfiring.

Class labels may be one per example, (N,) against (N, C) scores, or one per position: a
language model's (B, T) tokens against (B, V, T) scores (torch's layout) or (B, T, V) ones
(Hugging Face's), a segmentation net's (B, H, W) pixel classes against (B, C, H, W). The
default loss (`task_for(None)`) accepts both layouts; `class_scores` flattens either to
(positions, classes) rows, dropping the positions at `ignore_index`.

A Task also knows how to read the model's scores (`Task.output`): through
`babysit.data.batches.model_output`, or the user's `forward` when the call or the output
differs, so that every check calls the model one way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from babysit.data.batches import Forward, Inputs, model_output

__all__ = [
    "CrossEntropyLoss",
    "LossFn",
    "ShapeBroadcastError",
    "Task",
    "accuracy",
    "achievable_accuracy",
    "broadcast_shape",
    "chance_accuracy",
    "check_shapes",
    "class_dim",
    "class_labels_of",
    "class_scores",
    "target_scale",
    "task_for",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

# torch's cross_entropy and nll_loss skip targets equal to this by default.
TORCH_IGNORE_INDEX = -100


def class_dim(output: Tensor, y: Tensor) -> int | None:
    """The dimension of `output` that holds the class scores for integer targets `y`: 1 for
    (N, C) against (N,) and for torch's per-position layout ((B, C, T) or (B, C, H, W) against
    (B, T) or (B, H, W)); the last for (B, T, V) against (B, T). torch's layout wins when both
    fit (V == T). None when the shapes match neither (or the targets are not class indices)."""
    if y.is_floating_point() or output.dim() != y.dim() + 1 or output.dim() < 2:
        return None
    first = output.shape[0] == y.shape[0] and output.shape[2:] == y.shape[1:]
    if first:
        return 1
    if y.dim() >= 2 and output.shape[:-1] == y.shape:
        return output.dim() - 1
    return None


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch's cross-entropy, which also takes (B, T, V) scores against (B, T) targets (the
    Hugging Face layout), by moving the class dimension to where torch wants it. The loss
    `task_for(None)` gives, so that a language model checks with the default loss."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        dim = class_dim(input, target)
        if dim is not None and dim != 1:
            input = input.movedim(dim, 1)
        return super().forward(input, target)


class ShapeBroadcastError(ValueError):
    """Output and target shapes that differ but broadcast, e.g. (N,) against (N, 1): an
    elementwise loss then compares every output with every target, silently."""


_KINDS_BY_MODULE: tuple[tuple[type, str], ...] = (
    (nn.CrossEntropyLoss, "cross_entropy"),
    (nn.NLLLoss, "nll"),
    (nn.BCEWithLogitsLoss, "bce_logits"),
    (nn.BCELoss, "bce"),
    (nn.MSELoss, "regression"),
    (nn.L1Loss, "regression"),
    (nn.SmoothL1Loss, "regression"),
    (nn.HuberLoss, "regression"),
)
_KINDS_BY_FUNCTION: dict[Callable, str] = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll",
    F.binary_cross_entropy_with_logits: "bce_logits",
    F.binary_cross_entropy: "bce",
    F.mse_loss: "regression",
    F.l1_loss: "regression",
    F.smooth_l1_loss: "regression",
    F.huber_loss: "regression",
}


@dataclass(frozen=True)
class Task:
    """The loss and what it implies: `kind` is one of cross_entropy, nll, bce_logits, bce,
    regression, other. `ignore_index` is the label that cross-entropy/NLL skip; `forward`
    is the user's `forward(model, inputs) -> scores` (None: `model(inputs)`, its scores read
    by `babysit.data.batches.read_output`)."""

    kind: str
    loss_fn: LossFn
    name: str
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    forward: Forward | None = None

    def output(self, model: nn.Module, inputs: Inputs) -> Tensor:
        """The model's scores on `inputs` (a tensor, tuple or dict of inputs)."""
        return model_output(model, inputs, self.forward)

    @property
    def class_labels(self) -> bool:
        """The loss takes class indices (cross-entropy, NLL)."""
        return self.kind in ("cross_entropy", "nll")

    @property
    def known(self) -> bool:
        return self.kind != "other"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(output, y)

    @property
    def elementwise(self) -> bool:
        """The loss compares outputs and targets value by value (BCE, MSE, L1, Huber), so that
        shapes which differ but broadcast go unnoticed by torch."""
        return self.kind in ("bce", "bce_logits", "regression")

    def classes(self, output: Tensor, y: Tensor) -> int | None:
        """The number of classes C (or vocabulary size V) the output scores, for a class-label
        loss with integer targets, per example or per position; None otherwise."""
        if not self.class_labels:
            return None
        dim = class_dim(output, y)
        if dim is None:
            return None
        return int(output.shape[dim])

    def per_position(self, output: Tensor, y: Tensor) -> bool:
        """The targets name one class per position (tokens, pixels), not one per example."""
        return self.class_labels and class_dim(output, y) is not None and y.dim() >= 2

    def expected_initial_loss(self, output: Tensor, y: Tensor) -> float | None:
        """The loss of an uninformed output on these targets: ln(C) per example or per
        position for C-class cross-entropy (positions at ignore_index left out), ln 2 for BCE;
        None when the loss has no reference."""
        reference = self.uninformed_output(output, y)
        if reference is None:
            return None
        with torch.no_grad():
            return float(self.loss(reference, y))

    def accuracy_required(self, output: Tensor, y: Tensor) -> bool:
        """Whether overfitting a tiny subset must reach 100% accuracy: only for one class per
        example. For per-position targets exact accuracy is often impossible (sequences that
        share a prefix continue differently) and the fit is judged on the loss alone."""
        return not self.per_position(output, y)

    def uninformed_output(self, output: Tensor, y: Tensor | None = None) -> Tensor | None:
        """What a model that knows nothing outputs: uniform class scores, probability 1/2, or
        zeros for regression. Its loss is the reference for the initial loss (ln C for C-class
        cross-entropy, per position too); None when the loss's meaning is unknown. With the
        targets `y`, NLL finds its class dimension in either per-position layout."""
        if self.kind in ("cross_entropy", "bce_logits", "regression"):
            return torch.zeros_like(output)
        if self.kind == "nll":
            dim = class_dim(output, y) if y is not None else None
            classes = output.shape[dim if dim is not None else 1] if output.dim() > 1 else 1
            return torch.full_like(output, -math.log(classes))
        if self.kind == "bce":
            return torch.full_like(output, 0.5)
        return None

    def loss_floor(self, output: Tensor, y: Tensor) -> float:
        """The lowest loss a perfect fit reaches: 0 for hard targets; the targets' entropy for
        soft ones (label smoothing, class probabilities, BCE targets strictly inside (0, 1))."""
        if self.kind == "cross_entropy":
            dim = class_dim(output, y)
            classes = output.shape[dim if dim is not None else 1] if output.dim() > 1 else 1
            if y.is_floating_point() and y.shape == output.shape:
                return float(_entropy(y, dim=1).mean())
            eps = self.label_smoothing
            if not eps or classes < 2:
                return 0.0
            on, off = 1 - eps + eps / classes, eps / classes
            return -(on * math.log(on) + (classes - 1) * off * math.log(off))
        if self.kind in ("bce", "bce_logits") and y.is_floating_point():
            p = y.clamp(0, 1)
            return float((_entropy(torch.stack([p, 1 - p]), dim=0)).mean())
        return 0.0


def _entropy(p: Tensor, dim: int) -> Tensor:
    return -(torch.special.xlogy(p, p)).sum(dim=dim)


def _unwrap(fn: object) -> tuple[object, dict]:
    keywords: dict = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


def task_for(loss_fn: LossFn | None, forward: Forward | None = None) -> Task:
    """Recognise the loss (torch's loss modules and functions, also through functools.partial);
    None means cross-entropy on class labels, the default. `forward` is kept on the task."""
    if loss_fn is None:
        loss_fn = CrossEntropyLoss()
    fn, keywords = _unwrap(loss_fn)
    kind = "other"
    for cls, k in _KINDS_BY_MODULE:
        if isinstance(fn, cls):
            kind = k
            break
    else:
        if callable(fn) and fn in _KINDS_BY_FUNCTION:
            kind = _KINDS_BY_FUNCTION[fn]
    name = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", repr(fn))
    ignore = None
    if kind in ("cross_entropy", "nll"):
        ignore = getattr(fn, "ignore_index", keywords.get("ignore_index", TORCH_IGNORE_INDEX))
    smoothing = float(getattr(fn, "label_smoothing", keywords.get("label_smoothing", 0.0)))
    return Task(kind, loss_fn, name, ignore, smoothing, forward)


def class_labels_of(output: Tensor, y: Tensor, task: Task) -> Tensor | None:
    """The target class of each example (or position), when the targets name one: integer
    labels for cross-entropy/NLL, one-hot rows for BCE or MSE on one-hot targets, 0/1 for BCE on
    one output. None for real-valued targets."""
    if task.class_labels and not y.is_floating_point():
        return y
    if not y.is_floating_point() or y.shape != output.shape:
        if task.kind in ("bce", "bce_logits") and output.dim() == 2 and output.shape[1] == 1:
            flat = y.reshape(-1)
            if len(flat) == len(output) and bool(((flat == 0) | (flat == 1)).all()):
                return flat.long()
        return None
    if output.dim() == 2 and output.shape[1] == 1:
        binary = (y == 0) | (y == 1)
        return y[:, 0].long() if task.kind in ("bce", "bce_logits") and bool(binary.all()) else None
    if output.dim() == 2 and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all()):
        return y.argmax(dim=1)  # one-hot rows
    if task.kind == "cross_entropy" and output.dim() == 2:
        return y.argmax(dim=1)  # soft labels (class probabilities)
    return None


def _predicted(output: Tensor, task: Task, y: Tensor | None = None) -> Tensor:
    dim = class_dim(output, y) if y is not None and task.class_labels else None
    if dim is not None and output.shape[dim] > 1:
        return output.argmax(dim=dim)
    if output.dim() >= 2 and output.shape[1] > 1:
        return output.argmax(dim=1)
    scores = output.reshape(len(output), -1)[:, 0]
    threshold = 0.5 if task.kind == "bce" else 0.0
    return (scores > threshold).long()


def accuracy(output: Tensor, y: Tensor, task: Task) -> float | None:
    """Fraction of examples (or positions) whose predicted class is the target class; None
    when the targets are not classes. Labels equal to the loss's ignore_index are left out."""
    labels = class_labels_of(output, y, task)
    if labels is None:
        return None
    predicted = _predicted(output.detach(), task, y)
    if predicted.shape != labels.shape:
        return None
    keep = labels != task.ignore_index if task.ignore_index is not None else None
    hits = predicted == labels
    if keep is not None:
        if not bool(keep.any()):
            return None
        hits = hits[keep]
    return float(hits.float().mean())


def chance_accuracy(labels: Tensor) -> float:
    """The accuracy of always predicting the most frequent class."""
    flat = labels.reshape(-1)
    if flat.numel() == 0:
        return 0.0
    _, counts = torch.unique(flat, return_counts=True)
    return float(counts.max()) / flat.numel()


def class_scores(output: Tensor, y: Tensor, task: Task) -> tuple[Tensor, Tensor] | None:
    """(scores, labels) as (M, C) rows and (M,) class indices, one row per example or per
    position, the positions at ignore_index left out; None unless `task` takes class labels
    and `y` holds integer labels that fit `output`'s shape."""
    if not task.class_labels:
        return None
    dim = class_dim(output, y)
    if dim is None:
        return None
    scores = output.movedim(dim, -1).reshape(-1, output.shape[dim])
    labels = y.reshape(-1)
    if task.ignore_index is not None:
        keep = labels != task.ignore_index
        scores, labels = scores[keep], labels[keep]
    return scores, labels


def achievable_accuracy(x: Tensor, labels: Tensor, causal: bool = False) -> float:
    """The highest accuracy any model can reach on (x, labels): identical inputs with
    different labels cannot all be right. Per example, inputs are compared whole; per
    position with `causal` (a language model reading (B, T) ids), position t of each sequence
    is compared by its prefix x[:, :t+1], the only context the model sees there. Labels below
    0 (ignore_index) are left out. 1.0 when nothing conflicts."""
    if causal and labels.dim() == 2 and x.shape == labels.shape:
        hits = total = 0
        for t in range(labels.shape[1]):
            h, n = _best_hits(x[:, : t + 1], labels[:, t])
            hits, total = hits + h, total + n
        return hits / total if total else 1.0
    if labels.dim() != 1:
        return 1.0
    hits, total = _best_hits(x, labels)
    return hits / total if total else 1.0


def _best_hits(x: Tensor, labels: Tensor) -> tuple[int, int]:
    """(examples the best constant-per-input guess gets right, examples counted)."""
    keep = labels >= 0
    rows, labels = x.reshape(len(x), -1)[keep], labels[keep]
    if len(labels) == 0:
        return 0, 0
    _, group = torch.unique(rows, dim=0, return_inverse=True)
    pairs = torch.stack([group, labels.to(group.dtype)], dim=1)
    unique_pairs, counts = torch.unique(pairs, dim=0, return_counts=True)
    best = torch.zeros(int(group.max()) + 1, dtype=counts.dtype)
    best.scatter_reduce_(0, unique_pairs[:, 0], counts, reduce="amax")
    return int(best.sum()), len(labels)


def broadcast_shape(output: Tensor, y: Tensor, task: Task) -> tuple[int, ...] | None:
    """For an elementwise loss (BCE, MSE, L1, Huber): the shape that output and targets
    broadcast to when they differ and that shape is larger than the output's, e.g. (N, N)
    for (N, 1) outputs against (N,) targets; None when the shapes agree (or do not broadcast
    at all, which torch reports itself)."""
    if not task.elementwise or output.shape == y.shape:
        return None
    try:
        shape = torch.broadcast_shapes(output.shape, y.shape)
    except RuntimeError:
        return None
    if shape == output.shape:
        return None  # a target broadcast over the outputs on purpose, e.g. a (1,) constant
    return tuple(shape)


def check_shapes(output: Tensor, y: Tensor, task: Task) -> None:
    """Raise ShapeBroadcastError when an elementwise loss would broadcast output and targets
    to a larger shape (see `broadcast_shape`)."""
    shape = broadcast_shape(output, y, task)
    if shape is not None:
        raise ShapeBroadcastError(
            f"the output {tuple(output.shape)} and the targets {tuple(y.shape)} differ in "
            f"shape and {task.name} broadcasts them to {shape}, comparing every output with "
            f"every target: reshape the targets to {tuple(output.shape)} (y.view_as(output))"
        )


def target_scale(y: Tensor) -> dict[str, float]:
    """Mean, standard deviation, root-mean-square and largest magnitude of real targets,
    over every value (for the regression target-scale check)."""
    values = y.detach().double().reshape(-1)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return {"mean": math.nan, "std": math.nan, "rms": math.nan, "max_abs": math.nan}
    std = float(values.std()) if values.numel() > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "rms": float(values.pow(2).mean().sqrt()),
        "max_abs": float(values.abs().max()),
    }
