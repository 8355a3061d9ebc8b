"""Can the labels be learnt at all (ours): a copy of the model trained on part of the data,
and a linear classifier, scored on a held-out part."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Found
from babysit.checks.findings import Finding
from babysit.checks.runs import linear_baseline, recalibrate_batchnorm, train_copy
from babysit.checks.sanity import after_overfit
from babysit.checks.task import Task, accuracy, chance_accuracy, class_labels_of
from babysit.probes import preserved
from babysit.train import Callback, TrainState

__all__ = ["LEARNABLE_LINEAR_SHARE", "LEARNABLE_Z", "LearnableCheck", "check_learnable"]

# --- can the labels be learnt at all --------------------------------------------------------
# A copy of the model trained on part of the data, and a linear classifier, are scored on a
# held-out part; labels that do not follow the inputs (shuffled apart from them) leave both
# at chance. "At chance" = no more than LEARNABLE_Z binomial standard errors above the
# majority-class rate. Measured on digits: shuffled labels 0.08-0.11 held-out for MLPs and
# CNNs, 0.08 linear (chance 0.11-0.12, allowed up to 0.16-0.17); true labels 0.89-0.98
# (model), 0.93 (linear); a saturated tanh net 0.17 (model) but 0.93 (linear), so the labels
# are not blamed.
LEARNABLE_Z = 3.0
LEARNABLE_MIN_EXAMPLES = 200
LEARNABLE_HELD_OUT = 0.25
LEARNABLE_LR = 1e-3
LEARNABLE_MAX_FIT = 2048
# "Worse than a linear classifier": the copy's held-out accuracy covers less than this share
# of the way from chance to the ridge classifier's, on the same split. Measured on digits:
# healthy MLPs and CNNs 0.89-0.98 against 0.93-0.95 linear (over 90% of the way); a
# width-4 ResNet-18 after only 60 steps 0.59 against 0.92 (59%, slow but learning); faulty:
# a saturated tanh net 0.17 against 0.93 (7%), a ResNet-18 scored with stale BatchNorm
# statistics 0.07-0.13 against 0.92-1.00 (below chance). Allowed LEARNABLE_Z standard errors
# below that: a small CNN on hard synthetic data (linear is the right model there) scored
# 0.21 against 0.33 linear, 0.02 short of the half-way mark.
LEARNABLE_LINEAR_SHARE = 0.5
# A checkup scaled to its time allowance (babysit.checks.plan) scores the copy after 10, 20,
# 40, ... steps and stops once the verdict is clear; a verdict that is not clear by then
# runs the full `Budget.learnable_steps`, so the findings are those of the fixed budget (a
# width-4 ResNet-18 needs ~60 steps to get half of the way to a linear classifier).
# BatchNorm statistics are then re-estimated on this many training examples (the exact
# average over 4 batches of 64: per channel, 256 x H x W values).
LEARNABLE_EARLY_FIRST = 10
LEARNABLE_EARLY_RECALIBRATE = 256
# ... and scores on at most this many held-out examples (3 standard errors at chance 10%:
# +5.6%, against +4% on 512) and this many seen ones.
LEARNABLE_EARLY_HELD = 256
LEARNABLE_EARLY_SEEN = 128


def check_learnable(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    stop_early: bool = False,
) -> tuple[list[Finding], dict[str, Any]]:
    """Can the labels be predicted from the inputs at all? A copy of the model trained on
    part of the data, and a linear reference model, are scored on a held-out part: when both
    stay at chance, the labels do not follow the inputs (shuffled or misaligned). The linear
    model keeps a weak or broken network from being blamed on the labels, and the network
    keeps labels that only a nonlinear model can read from being called unlearnable.
    `stop_early` (a checkup scaled to its time allowance) scores the copy a few times during
    the run and stops once neither finding can be raised; the BatchNorm statistics are then
    re-estimated on fewer examples."""
    n = len(x)
    held = min(int(n * LEARNABLE_HELD_OUT), LEARNABLE_EARLY_HELD if stop_early else 512)
    if n < LEARNABLE_MIN_EXAMPLES or held < 50:
        return [], {"skipped": f"needs at least {LEARNABLE_MIN_EXAMPLES} examples, got {n}"}
    x_fit, y_fit = x[held:][:LEARNABLE_MAX_FIT], y[held:][:LEARNABLE_MAX_FIT]
    x_held, y_held = x[:held], y[:held]
    if reason := _nothing_to_score(model, x_held, y_held, task):
        return [], {"skipped": reason}
    recalibrate_on = x_fit[:LEARNABLE_EARLY_RECALIBRATE] if stop_early else x_fit
    callbacks = []
    if stop_early:
        callbacks.append(
            _ClearVerdict(x_fit, y_fit, x_held, y_held, task, recalibrate_on, batch_size, steps)
        )
    net, history = train_copy(
        model,
        x_fit,
        y_fit,
        task,
        steps=steps,
        lr=LEARNABLE_LR,
        optimizer="adam",
        batch_size=batch_size,
        seed=seed,
        callbacks=callbacks,
    )
    seen = LEARNABLE_EARLY_SEEN if stop_early else max(held, 256)
    x_seen, y_seen = x_fit[:seen], y_fit[:seen]
    # Scored in eval mode, as it will be used, with BatchNorm statistics of these weights
    # (re-estimated already when the run stopped right after its last scoring).
    if callbacks and callbacks[0].stopped:
        recalibrated = callbacks[0].recalibrated
    else:
        recalibrated = recalibrate_batchnorm(net, recalibrate_on, batch_size)
    net.eval()
    with torch.no_grad():
        out_held, out_seen, out_fit = net(x_held), net(x_seen), net(x_fit[:1])
    labels_held = class_labels_of(out_held, y_held, task)
    labels_seen = class_labels_of(out_seen, y_seen, task)
    labels_fit = class_labels_of(out_fit.expand(len(x_fit), *out_fit.shape[1:]), y_fit, task)
    if labels_held is None or labels_seen is None or labels_fit is None:
        return [], {"skipped": "the targets are not class labels"}
    if labels_held.dim() != 1:
        return [], {"skipped": "per-position labels (e.g. segmentation)"}
    held_acc, train_acc = accuracy(out_held, y_held, task), accuracy(out_seen, y_seen, task)
    chance = chance_accuracy(labels_held)
    margin = LEARNABLE_Z * math.sqrt(max(chance * (1 - chance), 1e-12) / len(x_held))
    measurement: dict[str, Any] = {
        "train_examples": len(x_fit),
        "held_out_examples": held,
        "steps": len(history.step_loss),
        "planned_steps": steps,
        "train_accuracy": train_acc,
        "held_out_accuracy": held_acc,
        "chance": chance,
        "margin": margin,
        "batchnorm_recalibrated": recalibrated,
    }
    if held_acc is None or train_acc is None:
        return [], measurement
    if len(torch.unique(labels_fit)) > 1:
        # The callback fitted the same ridge classifier on the same split already.
        linear_acc = callbacks[0].linear_acc if callbacks else None
        if linear_acc is None:
            linear_acc = linear_baseline(x_fit, labels_fit, x_held, labels_held)
        measurement["linear_held_out_accuracy"] = linear_acc
        if linear_acc > chance + margin:  # the inputs do predict the labels
            found = _below_linear(held_acc, train_acc, linear_acc, chance, margin, len(x_fit), held)
            return found, measurement
    if held_acc > chance + margin:
        return [], measurement
    return [_unlearnable(measurement)], measurement


def _unlearnable(m: dict[str, Any]) -> Finding:
    """LABELS_UNLEARNABLE from the learnable check's measurement."""
    return Finding(
        "LABELS_UNLEARNABLE",
        "error",
        f"the labels do not follow the inputs: a copy of the model trained on "
        f"{m['train_examples']} examples reaches {m['train_accuracy']:.0%} on them but "
        f"{m['held_out_accuracy']:.1%} on {m['held_out_examples']} held-out ones, and a linear "
        f"classifier {m.get('linear_held_out_accuracy', math.nan):.1%}: no better than "
        f"chance ({m['chance']:.1%}, +{m['margin']:.1%} allowed)",
        "check that inputs and labels are shuffled and indexed together (the same "
        "permutation for x and y), and that each label belongs to its input",
        m,
    )


def _nothing_to_score(model: nn.Module, x: Tensor, y: Tensor, task: Task) -> str | None:
    """Why there is nothing to score, known before any training from the targets and the
    shape of the output on two examples (None: there is)."""
    with preserved(model), torch.no_grad():
        model.eval()
        labels = class_labels_of(model(x[:2]), y[:2], task)
    if labels is None:
        return "the targets are not class labels"
    if labels.dim() != 1:
        return "per-position labels (e.g. segmentation)"
    return None


def _verdict_clear(held_acc, linear_acc, chance, margin) -> bool:
    """Neither LABELS_UNLEARNABLE nor WORSE_THAN_LINEAR can be raised any more: the copy is
    clearly above chance and at least half of the way to the linear classifier."""
    if held_acc is None or held_acc <= chance + margin:
        return False
    if linear_acc is None or linear_acc <= chance + margin:
        return True
    return held_acc >= chance + LEARNABLE_LINEAR_SHARE * (linear_acc - chance) - margin


class _ClearVerdict(Callback):
    """Scores the copy on the held-out part (eval mode, BatchNorm re-estimated) after 10,
    20, 40, ... steps, and stops the run once the verdict is clear."""

    def __init__(self, x_fit, y_fit, x_held, y_held, task, recalibrate_on, batch_size, steps):
        self.x_held, self.y_held, self.task = x_held, y_held, task
        self.recalibrate_on, self.batch_size = recalibrate_on, batch_size
        self.next = LEARNABLE_EARLY_FIRST
        self.steps = steps
        self.linear_acc: float | None = None
        self.chance, self.margin = 0.0, 0.0
        self._fit = (x_fit, y_fit)
        self.stopped, self.recalibrated = False, False

    def on_train_begin(self, state: TrainState) -> None:
        x_fit, y_fit = self._fit
        with preserved(state.model), torch.no_grad():
            state.model.eval()
            out = state.model(self.x_held[:1])
        labels_held = class_labels_of(
            out.expand(len(self.x_held), *out.shape[1:]), self.y_held, self.task
        )
        labels_fit = class_labels_of(out.expand(len(x_fit), *out.shape[1:]), y_fit, self.task)
        self.chance = chance_accuracy(labels_held)
        self.margin = LEARNABLE_Z * math.sqrt(
            max(self.chance * (1 - self.chance), 1e-12) / len(self.x_held)
        )
        if len(torch.unique(labels_fit)) > 1:
            self.linear_acc = linear_baseline(x_fit, labels_fit, self.x_held, labels_held)

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        if state.step < self.next or state.step >= self.steps:
            return  # the final score is the check's own
        self.next *= 2
        net = state.model
        self.recalibrated = recalibrate_batchnorm(net, self.recalibrate_on, self.batch_size)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            held_acc = accuracy(net(self.x_held), self.y_held, self.task)
        net.train(was_training)
        if _verdict_clear(held_acc, self.linear_acc, self.chance, self.margin):
            self.stopped = True
            state.stop(f"clearly learnable at step {state.step}")


def _below_linear(
    held_acc: float,
    train_acc: float,
    linear_acc: float,
    chance: float,
    margin: float,
    fitted: int,
    held: int,
) -> list[Finding]:
    """WORSE_THAN_LINEAR when the trained copy gets less than LEARNABLE_LINEAR_SHARE of the
    way from chance to a linear classifier's accuracy on the same split, by more than the
    sampling `margin` (LEARNABLE_Z standard errors): the labels can be learnt, and the model
    is what fails."""
    needed = chance + LEARNABLE_LINEAR_SHARE * (linear_acc - chance)
    if held_acc >= needed - margin:
        return []
    memorised = train_acc >= needed + (1 - needed) / 2
    why = (
        f"it fits the examples it saw ({train_acc:.0%}) but not new ones: it memorises "
        f"rather than generalises, or it behaves differently in eval mode (BatchNorm, "
        f"dropout) than in training"
        if memorised
        else f"it does not fit even the examples it saw ({train_acc:.0%}), scored in eval "
        f"mode: it learns too slowly, or behaves differently in eval mode than in training"
    )
    return [
        Finding(
            "WORSE_THAN_LINEAR",
            "warning",
            f"a copy of the model trained on {fitted} examples scores {held_acc:.1%} on {held} "
            f"held-out ones, a linear classifier {linear_acc:.1%} on the same split (chance "
            f"{chance:.1%}; needs half of the way, {needed:.1%}, less {margin:.1%} allowed for "
            f"sampling): {why}",
            "see the init and learning-rate findings; check the model's forward in eval mode "
            "(model.eval()), its normalization layers and its capacity against a linear "
            "baseline; with few examples, a smaller model or more data",
            {
                "held_out_accuracy": held_acc,
                "train_accuracy": train_acc,
                "linear_held_out_accuracy": linear_acc,
                "chance": chance,
                "needed": needed,
                "margin": margin,
            },
        )
    ]


class LearnableCheck(Check):
    """Whether the labels can be learnt at all (ours): a copy of the model and a linear
    classifier scored on held-out data."""

    name = "learnable labels"
    key = "learnable"
    title = "labels learnable"
    codes = {"LABELS_UNLEARNABLE": "error", "WORSE_THAN_LINEAR": "warning"}

    def skip(self, context: Context) -> str | None:
        return after_overfit(context)

    def run(self, context: Context) -> Found:
        plan = context.plan
        scaled = plan is not None and plan.scaled
        return check_learnable(
            *context.training_args,
            # Scaled: the fixed budget's steps, stopped as soon as the verdict is clear.
            steps=plan.given.learnable_steps if scaled else context.budget.learnable_steps,
            batch_size=context.budget.batch_size,
            seed=context.seed,
            stop_early=scaled,
        )

    needs = "held_out_accuracy"

    def reads(self, le: dict[str, Any]) -> str:
        linear = le.get("linear_held_out_accuracy")
        return (
            f"held-out accuracy {le['held_out_accuracy']:.0%} (chance {le['chance']:.0%}; must "
            f"beat it"
            + (
                f"; linear classifier {linear:.0%}, at least half of the way to it)"
                if isinstance(linear, int | float)
                else ")"
            )
        )
