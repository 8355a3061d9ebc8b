"""The learning rate: a range test that finds the usable range, and a short run at the
chosen rate judged by the lecture's rules and by the update/weight ratio per layer.

The range test is Smith's (WACV 2017) as fastai's `lr_find` runs it: the learning rate grows
exponentially from 1e-7 to 10 over 100 steps, the loss is recorded, and the run stops once
the smoothed loss passes 4x its best. We then smooth the curve with a centred window (no lag,
unlike the running average used for stopping) and suggest a tenth of the rate at the lowest
smoothed loss (fastai's `minimum` suggestion).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from babysit.checks.findings import Finding
from babysit.checks.runs import device_of, train_copy
from babysit.checks.task import Task
from babysit.data.batches import Inputs, select
from babysit.probes.nonfinite import first_nonfinite_layer
from babysit.train import LOSS_ABORT_FACTOR, Callback, LossAbort, fit
from babysit.train.measuring import LR_RANGE_START, LRRangeTest, UpdateRatioLog

__all__ = [
    "LR_FALLBACK",
    "LR_LOW_RELATIVE",
    "UPDATE_RATIO_MAX",
    "UPDATE_RATIO_MIN",
    "analyse_range",
    "check_lr",
    "lr_range_test",
]

# Centred smoothing window, in steps (100 steps over 8 decades: 7 steps ~ 0.55 decade).
LR_SMOOTH_STEPS = 7
# The usable range starts where the smoothed loss has fallen this fraction below its level
# at the smallest rates; a curve that never falls that far has no usable range. Measured:
# the loss wobbles +-4% over the first 30 steps on digits, where nothing is learnt yet.
LR_RANGE_DROP = 0.1
# ... and by this many standard errors of the smoothed loss at the first rates (its
# batch-to-batch noise over the smoothing window), so that noise is not read as a fall: the
# running extremes of a 7-step mean of pure noise over 100 steps reach ~3 of them.
LR_RANGE_NOISE_Z = 4.0
# The first 30% of the sweep (1e-7 to ~3e-5): SGD learns nothing there; Adam may start to.
LR_RANGE_NOISE_SPAN = 0.3
# A sweep with no usable range is repeated this many times slower. Measured: a width-8 CIFAR
# ResNet-18 (BatchNorm, plain SGD) on 1000 digits at 16x16 falls to 0.51 of its start in
# 100 steps, 0.14 in 300; see docs/checkup.md for the cases that need the second sweep.
LR_RANGE_RETRY_FACTOR = 3
# fastai's `minimum` rule: a tenth of the rate at the lowest loss.
LR_SUGGESTION_FACTOR = 0.1

# LR_TOO_HIGH is the loop's one divergence rule (babysit.train.divergence: NaN, or over 3x
# the first loss); a NaN cost "almost always means the learning rate is too high" (CS231n).
LR_HIGH_FACTOR = LOSS_ABORT_FACTOR
# "Loss barely moves": over the short run, the loss falls by less than this fraction of what
# the range test's suggestion achieves in as many steps (100). Measured on digits (MLPs and
# CNNs, sgd/momentum/adam): a rate 3x below the suggestion keeps 57-96% of its progress, 10x
# below 25-83%, 30x below 10-55%, 100x below 3-29%, 1000x below 1-7%. The suggestion is
# itself a tenth of the best rate, so this flags rates ~30x or more below the best one.
LR_LOW_RELATIVE = 0.3
# The comparison needs a reference run that made progress; otherwise (or with no
# suggestion), a loss falling by less than this fraction over the run is "barely moving".
LR_LOW_REFERENCE_MIN = 0.1
LR_LOW_ABSOLUTE = 0.01
# A suggestion whose short run trips the 3x/NaN rule is divided by this, at most
# LR_SUGGESTION_RETRIES times: the range test's minimum can sit at the end of the sweep on
# easy tasks (binary digits: min at lr 10, suggestion 1, which spikes).
LR_SUGGESTION_BACKOFF = 10.0
LR_SUGGESTION_RETRIES = 2
# CS231n notes (Part 3): the update/weight ratio "should be somewhere around 1e-3". Flagged
# two decades either side. Measured at the range test's suggestion on the calibration grid:
# medians per layer 2.6e-4..7e-2; 1000x below it 1e-6..2e-5; rates that blow up 1e-1..4.
# Layers followed by BatchNorm are scale-invariant (their weight norm is arbitrary and grows
# until the ratio settles), so they are not judged "too high": a small-init CNN with BN
# starts at 0.12 and trains well. So are layers summed under a LayerNorm (BERT's 0.02
# embeddings: token-type 1.2 at step 10 of SGD 0.14, 0.004 at step 100). A weight below
# torch's default init scale grows toward it (BERT's 0.02 classifier: 0.11, ending at 0.7
# of that scale): it is judged "too high" against that scale (docs/checkup.md).
# When the range test finds no usable rate, the update/weight ratios are still measured, at
# the usual starting rate of each optimizer (CS231n notes and torch's defaults: 1e-2 for
# SGD, 1e-3 for the adaptive ones), so that a layer no gradient reaches is still caught.
LR_FALLBACK = {"sgd": 1e-2, "momentum": 1e-2, "nesterov": 1e-2}
LR_FALLBACK_ADAPTIVE = 1e-3
# At the fallback rate the ratio band is widened this much each way. Measured: the
# 64-32-16-8-16-32-64 autoencoder (MSE, SGD at 1e-2, 60 steps) has encoder ratios 7e-6 and
# trains well at 5e-2; layers cut from the gradient have ratio 0.
FALLBACK_RATIO_MARGIN = 100.0
UPDATE_RATIO_TARGET = 1e-3
UPDATE_RATIO_MIN = 1e-5
UPDATE_RATIO_MAX = 1e-1


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (edges padded with the end values), same length as values."""
    half = window // 2
    padded = np.pad(values, (half, half), mode="edge")
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def analyse_range(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, Any]:
    """Smoothed curve, usable range (low, high) and suggestion of a range test; the
    suggestion is None when the loss never falls LR_RANGE_DROP below its starting level."""
    lrs_a, losses_a = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses_a)
    n = int(finite.argmin()) if not finite.all() else len(losses_a)
    result: dict[str, Any] = {
        "lr": lrs_a[: len(losses_a)].tolist(),
        "loss": losses_a.tolist(),
        "smoothed": [],
        "suggestion": None,
        "low": None,
        "high": None,
    }
    if n < LR_SMOOTH_STEPS:
        return result
    smooth = _smooth(losses_a[:n], LR_SMOOTH_STEPS)
    result["smoothed"] = smooth.tolist()
    head = max(3, n // 10)
    start = float(np.mean(smooth[:head]))
    # The fall must also stand out of the batch-to-batch noise of the first rates, where
    # nothing is learnt yet: class losses start at ~ln C on every batch, but a reconstruction
    # or regression loss varies from batch to batch by more than it falls at first.
    # Per-batch noise from step-to-step differences (a slow trend cancels out) over the
    # first LR_RANGE_NOISE_SPAN of the sweep, then the standard error of a window's mean.
    first = losses_a[: max(head + 1, int(n * LR_RANGE_NOISE_SPAN))]
    noise = float(np.std(np.diff(first)) / math.sqrt(2) / math.sqrt(LR_SMOOTH_STEPS))
    level = start - max(start * LR_RANGE_DROP, LR_RANGE_NOISE_Z * noise)
    best = int(smooth.argmin())
    result["start_loss"], result["min_loss"] = start, float(smooth[best])
    result["noise"] = noise
    if smooth[best] > level:
        return result
    low = int(np.argmax(smooth < level))
    result["low"], result["high"] = float(lrs_a[low]), float(lrs_a[best])
    tenth, onset = float(lrs_a[best]) * LR_SUGGESTION_FACTOR, float(lrs_a[low])
    result["suggestion"] = max(tenth, onset)
    result["rule"] = (
        "a tenth of the lowest point" if tenth >= onset else "where the loss starts to fall"
    )
    return result


def lr_range_test(
    model: nn.Module,
    x: Inputs,
    y: Tensor,
    task: Task,
    *,
    optimizer: str,
    steps: int,
    batch_size: int,
    seed: int = 0,
    retry: bool = True,
) -> dict[str, Any]:
    """Run the range test on a copy of the model; return `analyse_range`'s result plus the
    optimizer, the number of steps and why it stopped. A sweep that finds no usable range
    is run once more (unless `retry` is False: a checkup scaled to its time allowance),
    LR_RANGE_RETRY_FACTOR times slower (more steps at each rate); the first sweep's summary
    is kept under "first_sweep"."""
    result = _sweep(model, x, y, task, optimizer, steps, batch_size, seed)
    if result["suggestion"] is None and retry and LR_RANGE_RETRY_FACTOR > 1:
        first = {k: result.get(k) for k in ("start_loss", "min_loss", "steps", "stop")}
        result = _sweep(
            model, x, y, task, optimizer, steps * LR_RANGE_RETRY_FACTOR, batch_size, seed
        )
        result["first_sweep"] = first
    result["batch_size"] = min(batch_size, len(y))
    return result


def _sweep(model, x, y, task, optimizer, steps, batch_size, seed) -> dict[str, Any]:
    test = LRRangeTest(steps=steps)
    _, history = train_copy(
        model,
        x,
        y,
        task,
        steps=steps,
        lr=LR_RANGE_START,
        optimizer=optimizer,
        batch_size=batch_size,
        seed=seed,
        callbacks=[test],
    )
    result = analyse_range(test.lrs, test.losses)
    result.update({"optimizer": optimizer, "steps": len(test.losses), "stop": history.stop_reason})
    return result


def _short_run(
    model: nn.Module,
    x: Inputs,
    y: Tensor,
    task: Task,
    lr: float,
    optimizer: str,
    steps: int,
    batch_size: int,
    seed: int,
    ratios: bool,
    observe=None,
    groups: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    net = copy.deepcopy(model)
    callbacks: list[Callback] = [LossAbort(LR_HIGH_FACTOR)]
    if observe is not None:
        callbacks += observe(net)
    watch = UpdateRatioLog(net, groups) if ratios else None
    if watch is not None:
        callbacks.append(watch)
    history = fit(
        net,
        (x, y),
        epochs=1,
        lr=lr,
        optimizer=optimizer,
        batch_size=min(batch_size, len(y)),
        loss_fn=task.loss_fn,
        forward=task.forward,
        callbacks=callbacks,
        device=device_of(model),
        seed=seed,
        max_steps=steps,
    )
    losses = history.step_loss
    stop = history.stop_reason or ""
    located = None
    if "nan" in stop or "inf" in stop:
        located = _locate_nonfinite(
            model, net, x, y, task, lr, optimizer, len(losses) - 1, batch_size, seed
        )
    head = [v for v in losses[:5] if math.isfinite(v)]
    tail = [v for v in losses[-10:] if math.isfinite(v)]
    first = float(np.mean(head)) if head else math.nan
    last = float(np.mean(tail)) if tail and len(losses) > 10 else math.nan
    return {
        "lr": lr,
        "optimizer": optimizer,
        "step_loss": losses,
        "stop": history.stop_reason,
        "first_loss": first,
        "last_loss": last,
        "decrease": (first - last) / first if first > 0 and math.isfinite(last) else math.nan,
        "update_ratios": watch.medians() if watch is not None else {},
        "below_default_scale": watch.below_default_scale() if watch is not None else {},
        "nonfinite_layer": located,
    }


def _locate_nonfinite(
    model, net, x, y, task, lr, optimizer, steps, batch_size, seed
) -> dict[str, Any] | None:
    """The first layer whose output is non-finite with the weights the non-finite loss was
    computed with: the seeded run is replayed to the step before (paid only once a run has
    gone non-finite); `net`, the weights after that step, when the replayed weights give
    finite outputs on the first batch."""
    batch = select(x, slice(0, batch_size))
    replay = model
    if steps > 0:
        replay, _ = train_copy(
            model,
            x,
            y,
            task,
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            batch_size=batch_size,
            seed=seed,
        )
    found = first_nonfinite_layer(replay, batch, task.forward)
    return found if found is not None else first_nonfinite_layer(net, batch, task.forward)


def check_lr(
    model: nn.Module,
    x: Inputs,
    y: Tensor,
    task: Task,
    *,
    lr: float | None,
    suggestion: float | None,
    optimizer: str,
    steps: int,
    batch_size: int,
    seed: int = 0,
    normalized: Sequence[str] = (),
    groups: dict[str, list[str]] | None = None,
    observe=None,
) -> tuple[list[Finding], dict[str, Any]]:
    """A short run at `lr` (the user's) or at the range test's `suggestion`, judged by the
    CS231n rules: NaN or > 3x the first loss is LR_TOO_HIGH; a loss that barely moves
    (against what the suggestion achieves) is LR_TOO_LOW; per layer, the median
    update/weight ratio far from 1e-3 is UPDATE_RATIO_LOW / UPDATE_RATIO_HIGH. Without a
    user lr, the suggestion is first verified (lowered while its run blows up), and only
    layers out of line with the others are reported. `normalized` names the layers whose
    output a normalization reads (not judged too high); `groups` (an attention's name -> its
    projections, `babysit.probes.graph`) are measured as one ratio; a weight layer whose
    norm ends the run below torch's default init scale is judged too high against that
    scale (run["below_default_scale"]). With neither a user lr nor a suggestion,
    the ratios are measured at the optimizer's usual rate (`LR_FALLBACK`,
    measurement["fallback"]). measurement["suggestion"] is the verified suggestion.
    `observe(net)`, when given, returns callbacks for each run at the chosen rate (the
    parameter check reads that run)."""
    measurement: dict[str, Any] = {"user_lr": lr, "suggestion": suggestion}
    run = None
    if lr is None and suggestion is not None:
        for attempt in range(LR_SUGGESTION_RETRIES + 1):
            run = _short_run(
                model, x, y, task, suggestion, optimizer, steps, batch_size, seed, True, observe,
                groups,
            )
            if run["stop"] is None or attempt == LR_SUGGESTION_RETRIES:
                break
            measurement.setdefault("lowered_from", []).append(suggestion)
            suggestion /= LR_SUGGESTION_BACKOFF
        measurement["suggestion"] = suggestion
    chosen = lr if lr is not None else suggestion
    fallback = chosen is None
    if fallback:
        chosen = LR_FALLBACK.get(optimizer, LR_FALLBACK_ADAPTIVE)
        measurement["fallback"] = chosen
    if run is None:
        run = _short_run(
            model, x, y, task, chosen, optimizer, steps, batch_size, seed, True, observe, groups
        )
    measurement["run"] = run
    findings: list[Finding] = []
    if run["stop"] is not None:
        nonfinite = "nan" in run["stop"] or "inf" in run["stop"]
        if fallback or (lr is None and not nonfinite):
            measurement["unstable"] = run["stop"]
            return findings, measurement
        code = "LR_TOO_HIGH" if lr is not None else "NAN_LOSS"
        source = "the given" if lr is not None else "the suggested (and lowered)"
        where = run.get("nonfinite_layer")
        findings.append(
            Finding(
                code,
                "error",
                f"at {source} lr {chosen:g} ({optimizer}) the {run['stop']} "
                f"(CS231n: a cost above 3x the original, or NaN, means the learning rate is "
                f"too high)"
                + (
                    f"; then the first layer with a non-finite output was {where['layer']}"
                    if where
                    else ""
                ),
                "lower the learning rate"
                + (f"; the range test suggests {suggestion:.3g}" if suggestion and lr else "")
                + "; check the data and the model for values that overflow",
                {"lr": chosen, "stop": run["stop"], "suggestion": suggestion, "nonfinite": where},
                where["layer"] if where else None,
            )
        )
        return findings, measurement
    if lr is not None:
        findings += _too_low(
            model, x, y, task, run, lr, suggestion, optimizer, steps, batch_size, seed, measurement
        )
    ratios = {n: r for n, r in run["update_ratios"].items()}
    source = "the given" if lr is not None else "the fallback" if fallback else "the suggested"
    scales = run.get("below_default_scale") or {}
    findings += _ratio_findings(ratios, chosen, source, suggestion, set(normalized), scales)
    return findings, measurement


def _too_low(
    model, x, y, task, run, lr, suggestion, optimizer, steps, batch_size, seed, measurement
) -> list[Finding]:
    decrease = run["decrease"]
    if not math.isfinite(decrease):
        return []
    reference = None
    if suggestion is not None and lr < suggestion:
        reference = _short_run(
            model, x, y, task, suggestion, optimizer, steps, batch_size, seed, False
        )
        measurement["reference_run"] = reference
    if (
        reference is not None
        and math.isfinite(reference["decrease"])
        and reference["decrease"] >= LR_LOW_REFERENCE_MIN
    ):
        low = decrease < LR_LOW_RELATIVE * reference["decrease"]
        compare = (
            f", against {reference['decrease']:.1%} at the suggested {suggestion:.3g} "
            f"(needs at least {LR_LOW_RELATIVE:.0%} of that)"
        )
    else:
        low = decrease < LR_LOW_ABSOLUTE
        compare = f" (needs at least {LR_LOW_ABSOLUTE:.0%})"
    if not low:
        return []
    return [
        Finding(
            "LR_TOO_LOW",
            "warning",
            f"at the given lr {lr:g} ({optimizer}) the loss barely moves: it falls "
            f"{decrease:.1%} in {len(run['step_loss'])} steps ({run['first_loss']:.3g} -> "
            f"{run['last_loss']:.3g}){compare}",
            "raise the learning rate"
            + (f" toward the range test's suggestion {suggestion:.3g}" if suggestion else "")
            + "; search it on a log scale (lr = 10 ** uniform(-6, 1), CS231n)",
            {"lr": lr, "decrease": decrease, "suggestion": suggestion},
        )
    ]


def _ratio_findings(
    ratios: dict[str, float],
    lr: float,
    source: str,
    suggestion: float | None,
    normalized: set[str],
    scales: dict[str, float] | None = None,
) -> list[Finding]:
    user_lr = source == "the given"
    scales = scales or {}
    # The fallback rate is a guess, not a measured one: only ratios far outside the band,
    # which no reasonable rate would explain (a layer that never changes), are reported.
    widen = FALLBACK_RATIO_MARGIN if source == "the fallback" else 1.0
    ratio_min, ratio_max = UPDATE_RATIO_MIN / widen, UPDATE_RATIO_MAX * widen
    low = {n: r for n, r in ratios.items() if math.isfinite(r) and r < ratio_min}
    high = {
        n: r
        for n, r in ratios.items()
        if math.isfinite(r) and r * scales.get(n, 1.0) > ratio_max and n not in normalized
    }
    findings = []
    for code, group, word in (
        ("UPDATE_RATIO_LOW", low, "below"),
        ("UPDATE_RATIO_HIGH", high, "above"),
    ):
        everyone = len(group) == len(ratios)
        if not group or (everyone and not user_lr):
            # At our own suggestion, all layers off together says the suggestion is off,
            # not the set-up: only layers out of line with the others are worth a finding.
            continue
        names = list(group)
        worst = min(group, key=group.get) if word == "below" else max(group, key=group.get)
        listed = ", ".join(f"{n} {group[n]:.2g}" for n in names[:6])
        still = [n for n in names if group[n] == 0]
        why = (
            f"; {', '.join(still)} did not change at all: no gradient reaches "
            f"{'it' if len(still) == 1 else 'them'} (a detached or clamped path, dead units, "
            f"or updates below float precision)"
            if still
            else ""
        )
        limit = ratio_min if word == "below" else ratio_max
        fix = (
            ("raise" if word == "below" else "lower")
            + " the learning rate"
            + (f" (the range test suggests {suggestion:.3g})" if suggestion else "")
            if everyone
            else f"look at {worst}: its updates are out of line with the other layers' "
            f"(its init scale, a frozen or detached path); per-layer learning rates can help"
        )
        findings.append(
            Finding(
                code,
                "warning",
                f"update/weight ratio {word} {limit:g} at {source} lr {lr:.3g}: {listed} "
                f"(median over the run; CS231n: ~1e-3)" + why,
                fix,
                {
                    "ratios": group,
                    "lr": lr,
                    "target": UPDATE_RATIO_TARGET,
                    "range": [UPDATE_RATIO_MIN, UPDATE_RATIO_MAX],
                },
                worst,
            )
        )
    return findings
