"""What the loss expects, so that the checks can adapt to it or step aside.

Cross-entropy and NLL take class labels (and give ln(C) for an uninformed model); BCE takes
targets in [0, 1] (ln 2); MSE, L1 and Huber take real targets; any other callable is "other",
and the checks that need to know the loss's meaning skip themselves instead of misfiring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["LossFn", "Task", "accuracy", "chance_accuracy", "class_labels_of", "task_for"]

LossFn = Callable[[Tensor, Tensor], Tensor]

# torch's cross_entropy and nll_loss skip targets equal to this by default.
TORCH_IGNORE_INDEX = -100

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
    regression, other. `ignore_index` is the label that cross-entropy/NLL skip."""

    kind: str
    loss_fn: LossFn
    name: str
    ignore_index: int | None = None
    label_smoothing: float = 0.0

    @property
    def class_labels(self) -> bool:
        """The loss takes class indices (cross-entropy, NLL)."""
        return self.kind in ("cross_entropy", "nll")

    @property
    def known(self) -> bool:
        return self.kind != "other"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(output, y)

    def uninformed_output(self, output: Tensor) -> Tensor | None:
        """What a model that knows nothing outputs: uniform class scores, probability 1/2, or
        zeros for regression. Its loss is the reference for the initial loss (ln C for C-class
        cross-entropy); None when the loss's meaning is unknown."""
        if self.kind in ("cross_entropy", "bce_logits", "regression"):
            return torch.zeros_like(output)
        if self.kind == "nll":
            classes = output.shape[1] if output.dim() > 1 else 1
            return torch.full_like(output, -math.log(classes))
        if self.kind == "bce":
            return torch.full_like(output, 0.5)
        return None

    def loss_floor(self, output: Tensor, y: Tensor) -> float:
        """The lowest loss a perfect fit reaches: 0 for hard targets; the targets' entropy for
        soft ones (label smoothing, class probabilities, BCE targets strictly inside (0, 1))."""
        if self.kind == "cross_entropy":
            classes = output.shape[1] if output.dim() > 1 else 1
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


def task_for(loss_fn: LossFn | None) -> Task:
    """Recognise the loss (torch's loss modules and functions, also through functools.partial);
    None means cross-entropy on class labels, the default."""
    if loss_fn is None:
        loss_fn = nn.CrossEntropyLoss()
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
    return Task(kind, loss_fn, name, ignore, smoothing)


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


def _predicted(output: Tensor, task: Task) -> Tensor:
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
    predicted = _predicted(output.detach(), task)
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
