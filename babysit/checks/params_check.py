"""Trainable parameters that never train, in the checkup: a few optimizer steps of a copy at
the rate the learning-rate check ran at, with the largest gradient every parameter got and
its change over the steps (babysit.checks.params decides)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from babysit.checks.base import Check, Context, Found
from babysit.checks.params import check_params_updated, gradient_norms, parameter_updates, snapshot
from babysit.checks.runs import train_copy
from babysit.train import Callback, TrainState

__all__ = ["PARAMS_STEPS", "GradientPeaks", "ParamsCheck"]

# Optimizer steps of the copy: one moves every parameter that has a gradient (any optimizer
# with a non-zero rate); a few more make a first step that is skipped or clipped harmless.
# Our choice, and cheap: the learning-rate check runs 100.
PARAMS_STEPS = 5
# Findings that explain exact-zero gradients at init by themselves (a whole layer dead,
# zero or constant weights): the parameters before them are their symptom, not a loop bug.
EXPLAINED_BY = ("DEAD_UNITS", "INIT_SYMMETRIC")


class GradientPeaks(Callback):
    """The largest gradient norm of each trainable parameter over the backward passes of the
    run (None: it never had one): a zero-initialised last layer passes no gradient back at
    the first step, but does from the second on."""

    def __init__(self) -> None:
        self.norms: dict[str, float | None] = {}

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        for name, norm in gradient_norms(state.model).items():
            seen = self.norms.get(name)
            self.norms[name] = norm if seen is None else max(seen, norm or 0.0)


class ParamsCheck(Check):
    """PARAMS_NOT_UPDATED: no gradient reaches a parameter (detached, unused), or it has one
    and does not change (not in the optimizer); shown in the learning-rate row."""

    name = "parameters update"
    key = "params"
    row = "lr"
    codes = {"PARAMS_NOT_UPDATED": "error"}

    def skip(self, context: Context) -> str | None:
        return context.untrainable()

    def run(self, context: Context) -> Found:
        run = (context.measurements.get("lr") or {}).get("run") or {}
        lr = context.lr if context.lr is not None else run.get("lr")
        if lr is None:
            return [], {"skipped": "no learning rate (none given, none found)"}
        if context.raised(*EXPLAINED_BY, severity="error"):
            return [], {"skipped": "explained by the init audit's error"}
        shared = context.plan.shared.get("lr_run") if context.plan is not None else None
        if shared is not None and len(run.get("step_loss") or []) >= 2:
            # A checkup scaled to its time allowance reads the learning-rate check's run at
            # that rate (the same optimizer, batch and rate, more steps) instead of its own.
            before, net, gradients = shared
            steps = len(run["step_loss"])
        else:
            before = snapshot(context.model)
            gradients = GradientPeaks()
            net, history = train_copy(
                *context.training_args,
                steps=max(2, min(PARAMS_STEPS, context.budget.lr_steps)),
                lr=lr,
                optimizer=context.optimizer,
                batch_size=context.budget.batch_size,
                seed=context.seed,
                callbacks=[gradients],
            )
            if len(history.step_loss) < 2:  # diverged at once: LR_TOO_HIGH's business
                return [], {"skipped": f"the run stopped: {history.stop_reason}", "lr": lr}
            steps = len(history.step_loss)
        measurement: dict[str, Any] = parameter_updates(before, snapshot(net), gradients.norms)
        measurement["lr"] = lr
        measurement["steps"] = steps
        return check_params_updated(measurement), measurement
