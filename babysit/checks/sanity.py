"""The CS231n sanity checks before a real training run: the initial loss, the effect of
regularization, overfitting a tiny subset, and (ours) whether the labels can be learnt at all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.base import Check, Context, Figure, Found, fmt
from babysit.checks.findings import Finding
from babysit.checks.runs import (
    Measure,
    measure,
    train_copy,
)
from babysit.checks.task import Task
from babysit.data.batches import Inputs, select
from babysit.probes import preserved

__all__ = [
    "OVERFIT_EXAMPLES",
    "OVERFIT_LOSS_FRACTION",
    "REG_MIN_RISE",
    "check_overfit",
    "check_regularization",
]

# --- overfit a tiny subset ------------------------------------------------------------------
# CS231n notes (Part 3): "take a tiny piece of data (e.g. 20 examples), turn off
# regularization, and make sure that you can achieve zero cost".
OVERFIT_EXAMPLES = 20
# Adam learning rates tried in turn (Adam at 1e-3 fits a tiny batch in a few hundred steps
# for every healthy set-up of our grid; the others cover nets that want a larger or smaller
# step), each for at most `steps` full-batch steps.
OVERFIT_LRS = (1e-3, 1e-2, 1e-4)
# A checkup scaled to its time allowance (babysit.checks.plan: costly models) tries 1e-2
# first. Measured on 20 examples: GPT-2 (2 layers, 64 wide) fits in 30 steps at 1e-2 and
# 70-80 at 1e-3; CIFAR ResNet-18 at widths 16 and 64 in 10 steps at either rate.
OVERFIT_LRS_SCALED = (1e-2, 1e-3, 1e-4)
# "Zero cost", made a number: the loss must fall below its floor plus this fraction of its
# way down from the first loss, with 100% training accuracy. Measured: healthy set-ups reach
# < 2% of the initial loss; softmax before cross-entropy stalls at ~60%, a clamped output
# at 30-50%, a frozen net at 100%.
OVERFIT_LOSS_FRACTION = 0.1
OVERFIT_CHECK_EVERY = 10
# ... every 5 in a scaled checkup (babysit.checks.plan), whose steps are costly: a measure
# on the 20 examples costs a fifteenth of a step of 20. Measured: CIFAR ResNet-18 (width 16)
# fits them in 5 steps at Adam 1e-2, GPT-2 (2 layers, 64 wide) in 30.
OVERFIT_CHECK_EVERY_SCALED = 5
# Findings of the init and architecture audits that slow fitting down without being a bug;
# with one of them, a run that got the loss below this fraction of its way down is reported
# as a warning (fits too slowly) instead of an error (cannot fit). Measured: a 6-layer
# sigmoid stack reaches 0.14 of its initial loss in 300 steps, 8 tanh layers at 0.01 * randn
# 0.42; a softmax before cross-entropy stalls at 0.64, a frozen model at 1.0.
SLOW_FITTING_CAUSES = (
    "INIT_VANISHING",
    "INIT_EXPLODING",
    "INIT_SATURATED",
    "DEAD_UNITS",
    "SIGMOID_HIDDEN",
)
OVERFIT_PROGRESS = 0.5
# The earlier findings the overfit check names as what to fix first when it fails: the slow
# causes above, and the two that stop a model from fitting (symmetric weights, squashed logits).
OVERFIT_HINTS = (*SLOW_FITTING_CAUSES, "INIT_SYMMETRIC", "OUTPUT_ACTIVATION")
# A ReLU layer this narrow or narrower, with live units left, in a model that fits the tiny
# subset, gets DEAD_UNITS as info: its dead fraction at init is a small-number effect, not a
# fault. Measured: the published 64-32-16-8-16-32-64 autoencoder at torch's default init has
# 3 of 8 bottleneck units and 14 of 32 decoder units dead on 512 digits, and trains well
# (SGD lr 0.05); the faults of the grid are in layers of 64 units or more (biases of -5
# kill 43% of 100).
DEAD_NARROW_UNITS = 32

# --- regularization -----------------------------------------------------------------------
# CS231n notes: "crank up the regularization strength: the loss should go up". Weight decay
# is set so that, alone, it would shrink the weights by e^-REG_SHRINK over the run.
REG_SHRINK = 2.0
REG_LR = 1e-3
# The fitted loss with decay must end at least this fraction of the uninformed loss (ln C)
# above the fitted loss without, or this many times higher. Measured on the grid: healthy
# set-ups rise by 0.1-1.0 of ln C; a 10x500 tanh net, whose capacity fits 20 examples even
# with shrunken weights, by 0.013 of ln C but 1800x (1.7e-5 -> 0.031); weight-normalized
# logits with a fixed gain (decay cannot change the function): the loss falls, 0.62 -> 0.06.
REG_MIN_RISE = 0.02
REG_MIN_RATIO = 1.5
# The comparison needs a run without decay that fitted: its loss below this fraction of the
# uninformed loss; otherwise the check is skipped (a model that cannot fit says nothing
# about regularization).
REG_FITTED = 0.5


# ==========================================================================================
# Overfit a tiny subset
# ==========================================================================================


def _frozen(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def percent(fraction: float) -> str:
    """A fraction as a percentage, with the digits it needs never to read 100% below 1 nor
    0% above 0: 0.995 is "99.5%", 0.9999 "99.99%"."""
    for digits in range(5):
        text = format(fraction, f".{digits}%")
        if (fraction < 1 and text.startswith("100")) or (fraction > 0 and float(text[:-1]) == 0):
            continue
        return text
    return text


def _fitted(loss: float, acc: float | None, first: float, floor: float) -> bool:
    if not math.isfinite(loss):
        return False
    close = loss <= floor + OVERFIT_LOSS_FRACTION * max(first - floor, 0.0)
    return close and (acc is None or acc >= 1.0)


def check_overfit(
    model: nn.Module,
    x: Inputs,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    seed: int = 0,
    hints: tuple[str, ...] = (),
    lrs: tuple[float, ...] = OVERFIT_LRS,
    every: int = OVERFIT_CHECK_EVERY,
) -> tuple[list[Finding], dict[str, Any]]:
    """Train copies of the model on ~20 examples with regularization off (no dropout, no
    weight decay), full batch, Adam at a few learning rates (`lrs`, in turn, until one
    fits): it must reach 100% training accuracy and a loss near its floor. `hints` name
    earlier findings that would explain a failure; the fit is measured every `every`
    steps."""
    x, y = select(x, slice(0, OVERFIT_EXAMPLES)), y[:OVERFIT_EXAMPLES]
    if not any(p.requires_grad for p in model.parameters()):
        return [
            Finding(
                "CANNOT_OVERFIT",
                "error",
                "the model has no trainable parameters (every parameter has "
                "requires_grad=False): nothing can be learnt",
                "set requires_grad=True on the parameters to train (model.requires_grad_())",
                {"frozen": _frozen(model)},
            )
        ], {"frozen": _frozen(model)}
    with preserved(model), torch.no_grad():
        output = task.output(model, x)
    floor = task.loss_floor(output, y)
    # 100% only where it is achievable: per-position targets (tokens) are judged on the loss.
    need_accuracy = task.accuracy_required(output, y)
    runs = []
    reached = False
    for lr in lrs:
        first: list[float] = []

        def done(loss: float, acc: float | None, first=first) -> bool:
            if not first:
                first.append(loss)
            return _fitted(loss, acc if need_accuracy else None, first[0], floor)

        watch = Measure(x, y, task, every, done, train_mode=True)
        _, history = train_copy(
            model,
            x,
            y,
            task,
            steps=steps,
            lr=lr,
            optimizer="adam",
            batch_size=len(y),
            seed=seed,
            callbacks=[watch],
            dropout=False,
        )
        runs.append(
            {
                "lr": lr,
                "step_loss": history.step_loss,
                "checks": [list(r) for r in watch.records],
                "reached": watch.reached,
            }
        )
        if watch.reached:
            reached = True
            break
    best = min(runs, key=lambda r: r["checks"][-1][1] if r["checks"] else math.inf)
    step, loss, acc = best["checks"][-1]
    first_loss = best["checks"][0][1]
    measurement = {
        "examples": len(y),
        "optimizer": "adam",
        "floor": floor,
        "runs": runs,
        "reached": reached,
        "final_loss": loss,
        "final_accuracy": acc,
        "initial_loss": first_loss,
        "accuracy_required": need_accuracy,
    }
    if reached:
        return [], measurement
    return [_cannot_overfit(model, measurement, steps, hints)], measurement


def _cannot_overfit(
    model: nn.Module, measurement: dict[str, Any], steps: int, hints: tuple[str, ...]
) -> Finding:
    """CANNOT_OVERFIT from the best run of `measurement`: an error, or a warning when earlier
    findings explain slow fitting and the loss still made progress."""
    runs, floor = measurement["runs"], measurement["floor"]
    loss, acc, first_loss = (
        measurement["final_loss"],
        measurement["final_accuracy"],
        measurement["initial_loss"],
    )
    best = min(runs, key=lambda r: r["checks"][-1][1] if r["checks"] else math.inf)
    step = best["checks"][-1][0]
    frozen = _frozen(model)
    causes = [
        "softmax or sigmoid applied before a loss that applies it again",
        "a frozen, detached or clamped layer",
        "labels misaligned with the inputs",
        "targets the loss cannot reach",
    ]
    if frozen:
        causes.insert(0, f"{len(frozen)} frozen parameter(s) such as {frozen[0]}")
    acc_text = f"training accuracy {percent(acc)} and " if acc is not None else ""
    need = "100% and < " if measurement.get("accuracy_required", True) else "< "
    judged = (
        "" if measurement.get("accuracy_required", True) else "; judged on the loss per position"
    )
    # A set-up whose init/architecture findings explain slow fitting, and that still made
    # progress, fits badly rather than not at all: a warning that points at those findings.
    slow = [h for h in hints if h in SLOW_FITTING_CAUSES]
    progress = math.isfinite(loss) and loss - floor < OVERFIT_PROGRESS * max(first_loss - floor, 0)
    severity = "warning" if slow and progress else "error"
    return Finding(
        "CANNOT_OVERFIT",
        severity,
        f"the model cannot overfit {measurement['examples']} training examples with "
        f"regularization off"
        + (f" in time (slowed by {', '.join(slow)})" if severity == "warning" else "")
        + ": "
        f"after up to {steps} full-batch Adam steps at lr "
        f"{', '.join(format(r['lr'], 'g') for r in runs)}, the best run has {acc_text}loss "
        f"{loss:.3g} (from {first_loss:.3g}; needs {need}"
        f"{floor + OVERFIT_LOSS_FRACTION * max(first_loss - floor, 0):.3g}{judged})",
        (f"fix {', '.join(hints)} first (above); " if hints else "")
        + "a healthy model memorises 20 examples (CS231n); "
        + ("otherwise " if hints else "")
        + "look for: "
        + "; ".join(causes),
        {
            "final_loss": loss,
            "final_accuracy": acc,
            "initial_loss": first_loss,
            "floor": floor,
            "steps": step,
        },
    )


# Regularization
# ==========================================================================================


def _weight_norm(model: nn.Module) -> float:
    return float(
        torch.sqrt(
            sum((p.detach().float() ** 2).sum() for p in model.parameters() if p.requires_grad)
        )
    )


def check_regularization(
    model: nn.Module,
    x: Inputs,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    seed: int = 0,
) -> tuple[list[Finding], dict[str, Any]]:
    """Fit the tiny subset twice, with and without strong weight decay (AdamW, decoupled,
    so it acts at the same rate whatever the gradients): with it, the fitted loss must end
    higher."""
    x, y = select(x, slice(0, OVERFIT_EXAMPLES)), y[:OVERFIT_EXAMPLES]
    decay = REG_SHRINK / (REG_LR * steps)
    with preserved(model), torch.no_grad():
        output = task.output(model, x)
        uninformed = task.uninformed_output(output)
        reference = float(task.loss(uninformed, y)) if uninformed is not None else math.nan
    results = {}
    for name, wd in (("plain", 0.0), ("decayed", decay)):
        net, history = train_copy(
            model,
            x,
            y,
            task,
            steps=steps,
            lr=REG_LR,
            optimizer="adamw",
            batch_size=len(y),
            seed=seed,
            weight_decay=wd,
            dropout=False,
        )
        loss, _ = measure(net, x, y, task, train_mode=True)
        results[name] = {
            "loss": loss,
            "weight_norm": _weight_norm(net),
            "first": history.step_loss[0],
        }
    first = results["plain"]["first"]
    plain, decayed = results["plain"]["loss"], results["decayed"]["loss"]
    # The scale of a meaningful rise: the loss of an uninformed output (ln C for C classes),
    # not the first loss, which a bad init can make enormous.
    scale = reference if math.isfinite(reference) and reference > 0 else first
    measurement = {
        "weight_decay": decay,
        "steps": steps,
        "initial_loss": first,
        "scale": scale,
        **results,
    }
    if not (math.isfinite(plain) and math.isfinite(first)) or plain > REG_FITTED * scale:
        measurement["skipped"] = "the run without regularization did not fit the subset"
        return [], measurement
    rise = (decayed - plain) / scale if math.isfinite(decayed) else math.inf
    measurement["rise"] = rise
    if rise >= REG_MIN_RISE or decayed > REG_MIN_RATIO * plain:
        return [], measurement
    shrunk = results["decayed"]["weight_norm"] < 0.9 * results["plain"]["weight_norm"]
    why = (
        "the weights shrank but the loss did not rise: decay cannot change what they compute"
        if shrunk
        else "the weights did not shrink: decay does not reach the parameters that matter"
    )
    return [
        Finding(
            "REG_NO_EFFECT",
            "warning",
            f"strong weight decay ({decay:.3g}) did not raise the fitted loss: {decayed:.3g} "
            f"with it vs {plain:.3g} without (rise {rise:.1%} of {scale:.3g}, needs "
            f"{REG_MIN_RISE:.0%}); {why}",
            "check that the trained parameters are nn.Parameters passed to the optimizer "
            "(not buffers or tensors copied in forward) and that the loss depends on them",
            measurement,
        )
    ], measurement


class OverfitCheck(Check):
    """Overfit ~20 examples with regularization off (CS231n). When the model fits them,
    DEAD_UNITS drops to info where every flagged layer is narrow and still has live units
    (the lecture: a layer that trains is fine)."""

    name = "overfit tiny subset"
    key = "overfit"
    title = "overfit 20 examples"
    codes = {"CANNOT_OVERFIT": "error or warning"}
    section = "Overfitting a tiny subset"
    figures = (
        Figure(
            "overfit.png",
            "overfit_figure",
            ("overfit",),
            "tiny-subset training",
            "With regularization off a healthy model reaches 100% training accuracy and a loss "
            "near 0 on ~20 examples (CS231n).",
        ),
    )

    def skip(self, context: Context) -> str | None:
        return context.blocked()

    def run(self, context: Context) -> Found:
        hints = tuple(dict.fromkeys(f.code for f in context.raised(*OVERFIT_HINTS)))
        scaled = context.plan is not None and context.plan.scaled
        found, measurement = check_overfit(
            *context.training_args,
            steps=context.budget.overfit_steps,
            seed=context.seed,
            hints=hints,
            lrs=OVERFIT_LRS_SCALED if scaled else OVERFIT_LRS,
            every=OVERFIT_CHECK_EVERY_SCALED if scaled else OVERFIT_CHECK_EVERY,
        )
        if (measurement or {}).get("reached"):
            self._narrow_dead_units_train(context)
        return found, measurement

    @staticmethod
    def _narrow_dead_units_train(context: Context) -> None:
        for f in context.raised("DEAD_UNITS", severity="warning"):
            units, live = f.evidence.get("units") or [], f.evidence.get("live_units") or []
            if units and all(
                isinstance(u, int) and 0 < u <= DEAD_NARROW_UNITS and n > 0
                for u, n in zip(units, live, strict=False)
            ):
                context.amend(
                    f,
                    severity="info",
                    message=f"{f.message}; the layers are narrow ({max(units)} units or "
                    f"fewer), units are left alive in each, and the model fits 20 examples: "
                    f"this does not stop it from training",
                )

    needs = "final_loss"

    def reads(self, o: dict[str, Any]) -> str:
        acc = o.get("final_accuracy")
        acc_text = f"accuracy {acc:.0%}, " if isinstance(acc, int | float) else ""
        return (
            f"{acc_text}loss {fmt(o['initial_loss'])} -> {fmt(o['final_loss'])} (100% and near 0)"
        )


def after_overfit(context: Context) -> str | None:
    """The training checks after the overfit one step aside when there is an error, nothing
    to train, or a model that cannot fit 20 examples."""
    if reason := context.untrainable():
        return reason
    if context.raised("CANNOT_OVERFIT", severity="error"):
        return "the model cannot overfit a tiny subset"
    return None


class RegularizationCheck(Check):
    """Regularization raises the loss (CS231n): the tiny subset fitted with and without
    strong weight decay."""

    name = "regularization"
    key = "regularization"
    title = "regularization"
    codes = {"REG_NO_EFFECT": "warning"}

    def skip(self, context: Context) -> str | None:
        return after_overfit(context)

    def run(self, context: Context) -> Found:
        return check_regularization(
            *context.training_args,
            steps=context.budget.reg_steps,
            seed=context.seed,
        )

    needs = "rise"

    def reads(self, r: dict[str, Any]) -> str:
        return (
            f"fitted loss {fmt(r['plain']['loss'])} -> {fmt(r['decayed']['loss'])} with weight "
            f"decay (must rise)"
        )
