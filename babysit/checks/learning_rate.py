"""The learning-rate checks of the checkup: the range test, then a short run at the chosen
rate (the user's, or the range test's suggestion) judged by the CS231n rules and the
update/weight ratio per layer; LR_SUGGESTION says what the range test found."""

from __future__ import annotations

from typing import Any

from torch import nn

from babysit.checks.base import Check, Context, Figure, Found, fmt
from babysit.checks.findings import Finding
from babysit.checks.lr import UPDATE_RATIO_MAX, UPDATE_RATIO_MIN, check_lr, lr_range_test
from babysit.checks.params import snapshot
from babysit.checks.params_check import GradientPeaks
from babysit.data.batches import select
from babysit.probes.graph import graph_roles

__all__ = ["LRRangeCheck", "LearningRateCheck"]

# The examples of the one forward pass that reads the layers' roles from the autograd graph
# (babysit.probes.graph): the graph's shape does not depend on the batch; BatchNorm needs two.
ROLE_EXAMPLES = 8


class LRRangeCheck(Check):
    """The learning-rate range test (Smith 2017, fastai's lr_find): a measurement, judged by
    the learning-rate check that follows, in whose row it is shown."""

    name = "lr range test"
    key = "lr_range"
    row = "lr"

    def skip(self, context: Context) -> str | None:
        return context.untrainable()

    def run(self, context: Context) -> Found:
        budget, plan = context.budget, context.plan
        scaled = plan is not None and plan.scaled
        return [], lr_range_test(
            *context.training_args,
            optimizer=context.optimizer,
            steps=budget.range_steps,
            batch_size=(plan.range_batch_size if scaled else None) or budget.batch_size,
            seed=context.seed,
            retry=not scaled,
        )


class LearningRateCheck(Check):
    """A short run at the given rate, or at the range test's suggestion, judged by the
    CS231n rules and the update/weight ratio per layer; then LR_SUGGESTION."""

    name = "learning rate"
    key = "lr"
    title = "learning rate"
    codes = {
        "LR_TOO_LOW": "warning",
        "LR_TOO_HIGH": "error or warning",
        "NAN_LOSS": "error",
        "UPDATE_RATIO_LOW": "warning",
        "UPDATE_RATIO_HIGH": "warning",
        "LR_SUGGESTION": "info",
    }
    section = "Learning rate"
    figures = (
        Figure(
            "lr_range.png",
            "lr_figure",
            ("lr_range", "lr"),
            "learning-rate range test",
            "The learning rate grows exponentially each step (Smith 2017, fastai lr_find); "
            "the usable range is where the smoothed loss falls; the suggestion is the "
            "range test's rule (a tenth of the rate at its lowest), lowered where a short "
            "run there spiked.",
        ),
        Figure(
            "update_ratios.png",
            "update_ratio_figure",
            ("lr",),
            "update/weight ratios",
            "A short run at the chosen rate; right, the median of ||dW|| / ||W|| per step "
            "for each layer (CS231n: ~1e-3; red zones are flagged).",
        ),
    )

    def skip(self, context: Context) -> str | None:
        return context.untrainable()

    def run(self, context: Context) -> Found:
        budget, trace = context.budget, context.trace
        lr_range = context.measurements.get("lr_range")
        normalized = [
            c.name
            for c in trace.weight_calls()
            if any(
                isinstance(trace.calls[i].module, nn.modules.batchnorm._BatchNorm)
                for i in trace.consumers.get(c.index, [])
            )
        ]
        sample = select(context.x, slice(0, ROLE_EXAMPLES))
        roles = graph_roles(context.model, sample, context.task.forward)
        normalized += sorted(roles.normalized - set(normalized))
        plan = context.plan
        observe = None
        if plan is not None and plan.scaled:  # the parameter check reads this run
            before = snapshot(context.model)

            def observe(net):
                gradients = GradientPeaks()
                plan.shared["lr_run"] = (before, net, gradients)
                return [gradients]

        found, measurement = check_lr(
            *context.training_args,
            lr=context.lr,
            suggestion=(lr_range or {}).get("suggestion"),
            optimizer=context.optimizer,
            steps=budget.lr_steps,
            batch_size=budget.batch_size,
            seed=context.seed,
            normalized=normalized,
            groups=roles.attention,
            observe=observe,
        )
        measurement["ratio_range"] = [UPDATE_RATIO_MIN, UPDATE_RATIO_MAX]
        if lr_range is not None:
            learnt = _learnt_elsewhere(context.measurements)
            found.append(_suggestion_finding(lr_range, context.optimizer, measurement, learnt))
        return found, measurement

    def describe(self, measurements: dict[str, Any]) -> str | None:
        lr = measurements.get("lr") or {}
        rng = measurements.get("lr_range") or {}
        if not rng and not lr:
            return None
        parts = []
        if rng.get("low") is not None:
            parts.append(f"usable {fmt(rng['low'], '.2g')}..{fmt(rng['high'], '.2g')}")
        run = lr.get("run") or {}
        if run:
            ratios = [v for v in (run.get("update_ratios") or {}).values() if v is not None]
            parts.append(
                f"at {fmt(run.get('lr'), '.2g')}: loss {fmt(run.get('first_loss'))} -> "
                f"{fmt(run.get('last_loss'))}"
                + (
                    f", update ratios {min(ratios):.1e}..{max(ratios):.1e} (~1e-3)"
                    if ratios
                    else ""
                )
            )
        return "; ".join(parts) or None


def _learnt_elsewhere(measurements: dict[str, Any]) -> str | None:
    """What the other training checks measured the model learning, in words (None when
    they saw it learn nothing or did not run), so that the range test's finding never
    contradicts them."""
    learnable = measurements.get("learnable") or {}
    held, chance = learnable.get("held_out_accuracy"), learnable.get("chance")
    margin = learnable.get("margin") or 0.0
    if isinstance(held, float) and isinstance(chance, float) and held > chance + margin:
        return (
            f"the learnable-labels check trained a copy with Adam to {held:.0%} held-out "
            f"accuracy (chance {chance:.0%})"
        )
    overfit = measurements.get("overfit") or {}
    if overfit.get("reached"):
        return "the overfit check fitted 20 examples with Adam"
    return None


def _suggestion_finding(
    lr_range: dict[str, Any],
    optimizer: str,
    lr_measure: dict[str, Any],
    learnt: str | None = None,
) -> Finding:
    """LR_SUGGESTION (info): the range test's usable range and the suggestion, as verified
    by the short run (lowered when the first suggestion blew up); or, when it found none,
    what it measured, the fallback rate the update ratios were measured at, and what the
    other checks saw the model learn (`learnt`)."""
    steps = lr_range.get("steps", 0)
    suggestion = lr_measure.get("suggestion", lr_range.get("suggestion"))
    if suggestion is None:
        start, low = lr_range.get("start_loss"), lr_range.get("min_loss")
        fell = (
            f" (its smoothed loss went from {start:.3g} to at best {low:.3g})"
            if isinstance(start, float) and isinstance(low, float)
            else ""
        )
        fallback = lr_measure.get("fallback")
        ratios = (
            f"; the update/weight ratios were measured at the fallback lr {fallback:g} instead"
            if fallback is not None
            else ""
        )
        if learnt is not None:
            verdict = (
                f"; yet {learnt}: the model learns, the {optimizer} sweep was too short or "
                f"too noisy to show it"
            )
            fix = (
                f"pass a learning rate (lr=..., --lr) to have it judged, e.g. "
                f"{fallback or 0.01:g} for {optimizer}, or search one on a log scale "
                f"(babysit search)"
            )
        else:
            verdict = "; no other check saw the model learn either"
            fix = (
                "see the other findings (a model that cannot learn, labels that do not "
                "follow the inputs) before tuning the learning rate"
            )
        return Finding(
            "LR_SUGGESTION",
            "info",
            f"the learning-rate range test ({optimizer}, {steps} steps from 1e-7 to 10) found "
            f"no rate at which the loss falls by 10%{fell}" + ratios + verdict,
            fix,
            {
                **{k: lr_range.get(k) for k in ("start_loss", "min_loss", "steps")},
                "fallback": fallback,
            },
        )
    lowered = lr_measure.get("lowered_from") or []
    rule = lr_range.get("rule", "a tenth of the lowest point")
    how = (
        f"{suggestion:.2g} ({rule}, lowered from {lowered[0]:.2g} because a short run there spiked)"
        if lowered
        else f"{suggestion:.2g} ({rule})"
    )
    unstable = lr_measure.get("unstable")
    return Finding(
        "LR_SUGGESTION",
        "info",
        f"learning-rate range test ({optimizer}, {steps} steps): the loss falls from lr "
        f"{lr_range['low']:.2g} and is lowest at {lr_range['high']:.2g}; suggested lr {how}"
        + (f"; even there the {unstable}" if unstable else ""),
        f"train with lr around {suggestion:.2g} ({optimizer}), then refine with a coarse-to-"
        f"fine random search (babysit search)",
        {
            "suggestion": suggestion,
            "lowered_from": lowered,
            **{k: lr_range.get(k) for k in ("low", "high", "start_loss", "min_loss")},
        },
    )
