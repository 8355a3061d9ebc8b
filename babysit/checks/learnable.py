"""Can the labels be learnt at all (ours): a copy of the model trained on part of the data,
and a linear classifier, scored on a held-out part."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Found
from babysit.checks.findings import Finding
from babysit.checks.runs import linear_baseline, measure, recalibrate_batchnorm, train_copy
from babysit.checks.sanity import after_overfit
from babysit.checks.task import Task, accuracy, chance_accuracy, class_labels_of
from babysit.data.batches import Inputs, select
from babysit.probes import preserved
from babysit.train import EvaluateEvery

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
# The copy trains `steps` steps at a time, scored on the held-out part after each round,
# until it passes or after this many rounds: only a run that would otherwise be a finding
# pays for more. Measured: Embedding -> LSTM(32) on `x[:, 0] % 3` (vocab 12, T = 8, 384
# examples), Adam 1e-3, batches of 32: held-out 0.36 after 100 steps, 0.65 after 200, 1.0
# after 300; with shuffled labels 0.26-0.31 all the way to 800.
LEARNABLE_ROUNDS = 4
# A checkup scaled to its time allowance (babysit.checks.plan) scores the copy every this
# many steps instead of every round, so that the run stops as soon as it passes (a healthy
# width-16 ResNet-18 passes within tens of steps; a width-4 one needs ~80), and scores on
# fewer examples: at most this many held-out ones (3 standard errors at chance 10%: +5.6%,
# against +4% on 512) and this many seen ones (scored only for a finding's message: a run
# that passes has no use for them), with BatchNorm statistics re-estimated on
# this many training examples (the exact average over 4 batches of 64).
LEARNABLE_EARLY_EVERY = 10
LEARNABLE_EARLY_HELD = 256
LEARNABLE_EARLY_SEEN = 128
LEARNABLE_EARLY_RECALIBRATE = 256
# "Worse than a linear classifier": the copy's held-out accuracy covers less than this share
# of the way from chance to the ridge classifier's, on the same split. Measured on digits:
# healthy MLPs and CNNs 0.89-0.98 against 0.93-0.95 linear (over 90% of the way); a
# width-4 ResNet-18 after only 60 steps 0.59 against 0.92 (59%, slow but learning); faulty:
# a saturated tanh net 0.17 against 0.93 (7%), a ResNet-18 scored with stale BatchNorm
# statistics 0.07-0.13 against 0.92-1.00 (below chance). Allowed LEARNABLE_Z standard errors
# below that: a small CNN on hard synthetic data (linear is the right model there) scored
# 0.21 against 0.33 linear, 0.02 short of the half-way mark.
LEARNABLE_LINEAR_SHARE = 0.5


def check_learnable(
    model: nn.Module,
    x: Inputs,
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
    `stop_early` (a checkup scaled to its time allowance) scores the copy every
    LEARNABLE_EARLY_EVERY steps and on fewer examples, so that it stops soon after it
    passes."""
    n = len(y)
    held = min(int(n * LEARNABLE_HELD_OUT), LEARNABLE_EARLY_HELD if stop_early else 512)
    if n < LEARNABLE_MIN_EXAMPLES or held < 50:
        return [], {"skipped": f"needs at least {LEARNABLE_MIN_EXAMPLES} examples, got {n}"}
    fit_part = slice(held, held + LEARNABLE_MAX_FIT)
    x_fit, y_fit = select(x, fit_part), y[fit_part]
    x_held, y_held = select(x, slice(0, held)), y[:held]
    with preserved(model), torch.no_grad():  # the output's shape, for reading the labels
        probe = task.output(model.eval(), select(x_fit, slice(0, 1)))
    labels_held = class_labels_of(probe.expand(held, *probe.shape[1:]), y_held, task)
    labels_fit = class_labels_of(probe.expand(len(y_fit), *probe.shape[1:]), y_fit, task)
    if labels_held is None or labels_fit is None:
        return [], {"skipped": "the targets are not class labels"}
    if labels_held.dim() != 1:
        return [], {"skipped": "per-position labels (e.g. segmentation)"}
    chance = chance_accuracy(labels_held)
    margin = LEARNABLE_Z * math.sqrt(max(chance * (1 - chance), 1e-12) / held)
    linear_acc = None
    if len(torch.unique(labels_fit)) > 1:
        linear_acc = linear_baseline(x_fit, labels_fit, x_held, labels_held)
    # The held-out accuracy that passes: half of the way to the linear model where the inputs
    # predict the labels, else above chance. The run stops there, or after LEARNABLE_ROUNDS.
    linear_learns = linear_acc is not None and linear_acc > chance + margin
    passing = (
        chance + LEARNABLE_LINEAR_SHARE * (linear_acc - chance) - margin  # type: ignore[operator]
        if linear_learns
        else chance + margin
    )
    history, held_acc, train_acc, recalibrated = _train_and_score(
        model, (x_fit, y_fit), (x_held, y_held), task, passing, steps, batch_size, seed, stop_early
    )
    measurement: dict[str, Any] = {
        "train_examples": len(y_fit),
        "held_out_examples": held,
        "steps": len(history.step_loss),
        "planned_steps": steps * LEARNABLE_ROUNDS,
        "train_accuracy": train_acc,
        "held_out_accuracy": held_acc,
        "chance": chance,
        "margin": margin,
        "batchnorm_recalibrated": recalibrated,
    }
    if held_acc is None or (train_acc is None and held_acc <= passing):
        return [], measurement
    if linear_acc is not None:
        measurement["linear_held_out_accuracy"] = linear_acc
    if linear_learns:  # the inputs do predict the labels
        found = _below_linear(held_acc, train_acc, linear_acc, chance, margin, len(y_fit), held)
        return found, measurement
    if held_acc > chance + margin:
        return [], measurement
    return [
        Finding(
            "LABELS_UNLEARNABLE",
            "error",
            f"the labels do not follow the inputs: a copy of the model trained on "
            f"{len(y_fit)} examples reaches {train_acc:.0%} on them but {held_acc:.1%} on "
            f"{held} held-out ones, and a linear classifier "
            f"{measurement.get('linear_held_out_accuracy', math.nan):.1%}: no better than "
            f"chance ({chance:.1%}, +{margin:.1%} allowed)",
            "check that inputs and labels are shuffled and indexed together (the same "
            "permutation for x and y), and that each label belongs to its input",
            measurement,
        )
    ], measurement


def _train_and_score(model, fit, held, task, passing, steps, batch_size, seed, stop_early):
    """(History, held-out accuracy, accuracy on seen examples or None, whether BatchNorm was
    re-estimated) of a copy of `model` trained on `fit` in rounds (`_train_in_rounds`),
    scored on `held` in eval mode with BatchNorm statistics of its trained weights."""
    (x_fit, y_fit), (x_held, y_held) = fit, held
    every = min(steps, LEARNABLE_EARLY_EVERY) if stop_early else steps
    recalibrate_on = select(x_fit, slice(0, LEARNABLE_EARLY_RECALIBRATE)) if stop_early else x_fit
    scores = _Scores(task, recalibrate_on if every < steps else None, batch_size)
    net, history = _train_in_rounds(
        model, fit, held, task, passing, steps, every, batch_size, seed, scores
    )
    if scores.final is not None:  # passed at its first scoring, scored as below
        held_acc, recalibrated = scores.final
    else:
        recalibrated = recalibrate_batchnorm(net, recalibrate_on, batch_size, task.forward)
        net.eval()
        with torch.no_grad():
            held_acc = accuracy(task.output(net, x_held), y_held, task)
    train_acc = None
    # The examples it saw only explain a finding: a scaled checkup scores them only then.
    if not (stop_early and held_acc is not None and held_acc > passing):
        seen = slice(0, LEARNABLE_EARLY_SEEN if stop_early else max(len(y_held), 256))
        with torch.no_grad():
            train_acc = accuracy(task.output(net, select(x_fit, seen)), y_fit[seen], task)
    return history, held_acc, train_acc, recalibrated


class _Scores:
    """The held-out scoring during the learnable-labels run: in train mode (BatchNorm on the
    batch's own statistics, as the recalibrated model will be scored: its running averages
    lag behind the weights), except, with `recalibrate_on` (a scaled checkup), the first
    one, which is made as the final score is (BatchNorm statistics re-estimated on those
    examples, eval mode), so that a copy that passes there needs no second scoring: `final`
    is then (accuracy, recalibrated)."""

    def __init__(self, task: Task, recalibrate_on: Inputs | None, batch_size: int):
        self.task, self.recalibrate_on, self.batch_size = task, recalibrate_on, batch_size
        self.final: tuple[float | None, bool] | None = None

    def __call__(self, model: nn.Module, x: Inputs, y: Tensor) -> tuple[float, float | None]:
        if self.recalibrate_on is not None:
            on, self.recalibrate_on = self.recalibrate_on, None
            recalibrated = recalibrate_batchnorm(model, on, self.batch_size, self.task.forward)
            loss, acc = measure(model, x, y, self.task, train_mode=False)
            self.final = (acc, recalibrated)
            return loss, acc
        self.final = None  # a later scoring: the run goes on past the first
        return measure(model, x, y, self.task, train_mode=True)


def _train_in_rounds(model, fit, held, task, passing, steps, every, batch_size, seed, scores):
    """(copy, History): a copy of `model` trained on `fit` in rounds of `steps` Adam steps,
    until its accuracy on `held` (scored every `every` steps by `scores`) passes `passing`,
    at most LEARNABLE_ROUNDS rounds; `scores.final` is set when it passed at its first
    scoring. Scored every `every` < `steps` steps (a scaled checkup), the untrained copy is
    not scored: it cannot pass, and each scoring costs a third of a step per example held
    out."""
    at_start = every >= steps  # the fixed budget's runs, as calibrated
    started: list[bool] = []

    def learnt(loss: float, acc: float | None) -> bool:
        if at_start and not started:  # the evaluation before the first step
            started.append(True)
            return False
        passed = acc is not None and acc > passing
        if not passed:
            scores.final = None
        return passed

    watch = EvaluateEvery(
        scores,
        held,
        every=max(1, every),
        at_start=at_start,
        at_end=True,
        mode=None,  # `scores` sets the mode itself
        stop_when=lambda value: learnt(*value) and "reached",
    )
    return train_copy(
        model,
        *fit,
        task,
        steps=steps * LEARNABLE_ROUNDS,
        lr=LEARNABLE_LR,
        optimizer="adam",
        batch_size=batch_size,
        seed=seed,
        callbacks=[watch],
    )


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
            # Scaled: the fixed budget's steps, stopped as soon as the copy passes.
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
