"""A short real training run, judged by the gap between training and validation accuracy
(CS231n Lecture 6: a big gap means overfitting, no gap and low accuracy means the model
lacks capacity)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Figure, Found, draw
from babysit.checks.findings import Finding
from babysit.checks.runs import device_of, linear_baseline
from babysit.checks.task import Task, accuracy, class_labels_of
from babysit.data.batches import Inputs, select, to_device
from babysit.train import Callback, EvaluateEvery, History, LossAbort, fit

__all__ = ["OVERFIT_GAP", "UNDERFIT_MARGIN", "TrainingRunCheck", "check_generalization"]

# Train minus validation accuracy above this is overfitting. Our choice: 10 points is well
# outside the noise of a few hundred validation examples (std ~2 points on digits' 360) and
# above what healthy digits runs show after ~20 epochs (train 0.99-1.00, val 0.95-0.97);
# 60 training examples into a 2x256 MLP give 0.20.
OVERFIT_GAP = 0.10
# Underfitting, measured against the data rather than a fixed accuracy: the model's accuracy
# on its own training data stays this far below what a linear classifier (ridge, on the same
# training sample) reaches on the validation data. Measured on digits: linear 0.96 val;
# healthy MLPs 0.99-1.00 train; a 2-unit bottleneck 0.58, a 4-unit one 0.88.
UNDERFIT_MARGIN = 0.02


def _accuracies(
    model: nn.Module, x_train: Inputs, y_train: Tensor, x_val: Inputs, y_val: Tensor, task: Task
) -> tuple[float | None, float | None]:
    """Accuracy (babysit's, which also reads one-hot targets) on the train and val batches."""
    return (
        accuracy(task.output(model, x_train), y_train, task),
        accuracy(task.output(model, x_val), y_val, task),
    )


def _epoch_records(history: History, watch: EvaluateEvery) -> list[dict[str, float | None]]:
    """Per epoch: the loop's losses and the accuracies `watch` measured at the epoch's end."""
    return [
        {
            "epoch": metrics["epoch"],
            "train_loss": metrics.get("train_loss"),
            "val_loss": metrics.get("val_loss"),
            "train_accuracy": evaluation.value[0],
            "val_accuracy": evaluation.value[1],
        }
        for metrics, evaluation in zip(history.epochs, watch.evaluations, strict=True)
    ]


def check_generalization(
    model: nn.Module,
    train: tuple[Inputs, Tensor],
    val: tuple[Inputs, Tensor],
    task: Task,
    *,
    lr: float,
    optimizer: str,
    epochs: int,
    min_steps: int,
    max_steps: int,
    batch_size: int,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
) -> tuple[list[Finding], dict[str, Any]]:
    """Train a copy for `epochs` epochs, but at least `min_steps` and at most `max_steps`
    optimizer steps (small data sets get more epochs), and judge OVERFITTING /
    UNDERFITTING; NAN_LOSS or LR_TOO_HIGH if the loss blows up on the way."""
    net = copy.deepcopy(model)
    steps_per_epoch = math.ceil(len(train[1]) / batch_size)
    steps = min(max(epochs * steps_per_epoch, min_steps), max_steps)
    epochs = math.ceil(steps / steps_per_epoch)
    sample = slice(0, min(len(val[1]), 1024))
    batches = (select(train[0], sample), train[1][sample], select(val[0], sample), val[1][sample])
    watch = EvaluateEvery(partial(_accuracies, task=task), batches, per_epoch=True, at_start=False)
    history = fit(
        net,
        train,
        val,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        loss_fn=task.loss_fn,
        forward=task.forward,
        callbacks=[LossAbort(), watch, *callbacks],
        device=device_of(model),
        seed=seed,
        max_steps=steps,
    )
    measurement: dict[str, Any] = {
        "lr": lr,
        "optimizer": optimizer,
        "epochs": _epoch_records(history, watch),
        "steps": len(history.step_loss),
        "stop": history.stop_reason,
    }
    if history.stop_reason is not None:
        return [
            Finding(
                "NAN_LOSS"
                if "nan" in history.stop_reason or "inf" in history.stop_reason
                else "LR_TOO_HIGH",
                "error",
                f"training at lr {lr:g} ({optimizer}) stopped: {history.stop_reason}",
                "lower the learning rate; check the data and the loss for values that overflow",
                {"lr": lr, "stop": history.stop_reason},
            )
        ], measurement
    records = [r for r in measurement["epochs"] if r["train_accuracy"] is not None]
    if not records or records[-1]["val_accuracy"] is None:
        measurement["skipped"] = "the targets are not classes: no accuracy to compare"
        return [], measurement
    train_acc, val_acc = records[-1]["train_accuracy"], records[-1]["val_accuracy"]
    gap = train_acc - val_acc
    measurement.update({"train_accuracy": train_acc, "val_accuracy": val_acc, "gap": gap})
    evidence = {
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
        "gap": gap,
        "epochs": len(records),
    }
    if gap > OVERFIT_GAP:
        return [
            Finding(
                "OVERFITTING",
                "warning",
                f"after {len(records)} epochs training accuracy is {train_acc:.1%} and "
                f"validation {val_acc:.1%}: a gap of {gap:.1%} (limit {OVERFIT_GAP:.0%})",
                "increase regularization (weight decay, dropout, data augmentation), get "
                "more data, or use a smaller model (CS231n: big gap = overfitting)",
                evidence,
            )
        ], measurement
    return _underfitting(net, train, val, task, records, evidence, measurement), measurement


def _underfitting(net, train, val, task, records, evidence, measurement) -> list[Finding]:
    """UNDERFITTING: the trained copy's training accuracy below what a linear classifier
    reaches on the validation data (recorded in `measurement`)."""
    train_acc, val_acc = evidence["train_accuracy"], evidence["val_accuracy"]
    with torch.no_grad():
        probe = task.output(net.eval(), select(train[0], slice(0, 1)))
    fit_labels = class_labels_of(probe.expand(len(train[1]), *probe.shape[1:]), train[1], task)
    val_labels = class_labels_of(probe.expand(len(val[1]), *probe.shape[1:]), val[1], task)
    if fit_labels is None or val_labels is None or fit_labels.dim() != 1:
        return []
    linear = linear_baseline(train[0], fit_labels, val[0], val_labels)
    measurement["linear_val_accuracy"] = linear
    if train_acc < linear - UNDERFIT_MARGIN:
        gain = train_acc - records[-1 - len(records) // 3]["train_accuracy"]
        return [
            Finding(
                "UNDERFITTING",
                "warning",
                f"after {len(records)} epochs training accuracy is only {train_acc:.1%} "
                f"(validation {val_acc:.1%}), below the {linear:.1%} a linear classifier "
                f"reaches on the validation data: the model does not fit its own training data"
                + (f" (still rising, +{gain:.1%} over the last third)" if gain > 0.01 else ""),
                "increase the model's capacity (wider or deeper layers), lower "
                "regularization, or tune the learning rate (CS231n: no gap = increase "
                "capacity)",
                {**evidence, "linear_val_accuracy": linear, "recent_gain": gain},
            )
        ]
    return []


class TrainingRunCheck(Check):
    """With quick=False and validation data, a short real run at the given or suggested rate,
    judged for over- and underfitting."""

    name = "training run"
    key = "training"
    title = "training run"
    codes = {
        "OVERFITTING": "warning",
        "UNDERFITTING": "warning",
        "NAN_LOSS": "error",
        "LR_TOO_HIGH": "error",
    }
    section = "Training run"
    figures = (
        Figure(
            "training.png",
            "training_figure",
            ("training",),
            "training curves",
            "A short real run: a large train/val gap is overfitting; low accuracy on both is "
            "underfitting.",
        ),
    )

    @staticmethod
    def _rate(context: Context) -> float | None:
        if context.lr is not None:
            return context.lr
        measured = context.measurements.get("lr") or {}
        return measured.get(
            "suggestion", (context.measurements.get("lr_range") or {}).get("suggestion")
        )

    def skip(self, context: Context) -> str | None:
        if context.quick or context.val_data is None:
            return None  # not a skip: the measurement says why it did not run
        if reason := context.untrainable():
            return reason
        if self._rate(context) is None:
            return "no learning rate (none given, none found)"
        return None

    def run(self, context: Context) -> Found:
        if context.quick or context.val_data is None:
            why = (
                "quick mode (pass quick=False, or --full)"
                if context.quick
                else "no validation data"
            )
            return [], {"skipped": why}
        budget = context.budget
        vx, vy, _, _ = draw(context.val_data, "val_data", budget.max_examples, context.seed)
        return check_generalization(
            context.model,
            (context.x, context.y),
            (to_device(vx, context.device), vy.to(context.device)),
            context.task,
            lr=self._rate(context),
            optimizer=context.optimizer,
            epochs=budget.full_epochs,
            min_steps=budget.full_min_steps,
            max_steps=budget.full_max_steps,
            batch_size=budget.batch_size,
            seed=context.seed,
        )

    needs = "train_accuracy"

    def reads(self, t: dict[str, Any]) -> str:
        linear = t.get("linear_val_accuracy")
        return (
            f"train {t['train_accuracy']:.1%}, val {t['val_accuracy']:.1%} (gap <= 10%"
            + (f"; train >= linear {linear:.1%} - 2%" if linear is not None else "")
            + ")"
        )
