"""Reading a training run: the lecture's section 2 ("babysitting the learning process") as
findings about a Monitor's history (`mon.report()`, `babysit report RUN_DIR`).

Input: the Monitor's records (babysit.train.monitor documents them): the loss of every
step, accuracies where logged, and on probe steps the per-layer statistics, the update
ratios and the "loop" facts (mode, learning rate, stale gradients, parameters the optimizer
does not hold). Each rule below reads one of those and cites where its threshold comes from.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from babysit.checks.findings import Finding
from babysit.checks.generalization import OVERFIT_GAP
from babysit.checks.lr import UPDATE_RATIO_MAX, UPDATE_RATIO_MIN, UPDATE_RATIO_TARGET

__all__ = [
    "DEAD_GROWTH",
    "EVAL_MODE_FRACTION",
    "LOSS_NOISY_CV",
    "LR_DECAYED_FRACTION",
    "RUN_RATIO_HIGH",
    "RUN_RATIO_LOW",
    "UNDERFIT_ACCURACY",
    "check_training_run",
    "smooth",
]

# The smoothed loss is a centred moving average over this fraction of the run (at least 5
# steps): long enough to average out batch noise, short enough to keep the curve's bends.
SMOOTH_FRACTION = 0.05
# LOSS_NOISY: in the second half of the run, the std of the loss around its smoothed curve
# is above this fraction of the curve's scale (its fall, or its level if it barely fell).
# Measured on standardized digits (64-64-10 MLP, SGD momentum at 0.01-0.05, one seed each):
# 0.01 at batch 64, 0.11 at batch 16, 0.27 at batch 4, 0.52 at batch 2.
LOSS_NOISY_CV = 0.4
# LR_TOO_LOW / LR_TOO_HIGH by the update/weight ratio (CS231n notes: "somewhere around
# 1e-3"): the median over the run's weights and probe steps a decade away from it, with a
# loss that confirms it (see the rules). Per layer, UPDATE_RATIO_LOW/HIGH keep the
# checkup's two-decade limits (babysit.checks.lr).
RUN_RATIO_LOW = UPDATE_RATIO_TARGET / 10
RUN_RATIO_HIGH = UPDATE_RATIO_TARGET * 10
# "Falls slowly and linearly": the smoothed loss fell by less than this fraction of its
# first value (the checkup's LR_LOW_RELATIVE reads 30% of a good rate's progress as slow).
SLOW_DROP = 0.3
# "Stalls high": the best smoothed loss of the second half is no better than this fraction
# of the first half's best (the curve has stopped improving).
STALL_IMPROVEMENT = 0.98
# A learning-rate schedule that has decayed the rate below this fraction of its peak before
# half the run: nothing is learnt afterwards (one-cycle ends at 1/10,000 of its peak but at
# the end; a per-epoch StepLR stepped per batch reaches 1e-3 within 3x its step size).
LR_DECAYED_FRACTION = 1e-3
# DEAD_UNITS during training: the dead fraction of a ReLU-family layer grew by at least this
# much from the first probe and ends above it (CS231n: "as much as 40% of your network can
# be dead" with too high a learning rate); a healthy net stays near its value at init.
DEAD_GROWTH = 0.2
# EVAL_MODE_TRAINING: on at least this fraction of the probed optimizer steps no dropout or
# BatchNorm module was in train mode (validation between epochs is a few steps at most).
EVAL_MODE_FRACTION = 0.5
# GRAD_ACCUMULATING: gradients carried over an optimizer step on at least this fraction of
# the checked backward passes (one carried-over pass is a loop's odd first step).
STALE_FRACTION = 0.5
# UNDERFITTING without the data: train and val accuracy both below this, within
# OVERFIT_GAP / 2 of each other, and the training accuracy no longer rising (our choice:
# below 80% with no gap, a classifier has room for capacity; the checkup compares against a
# linear model instead, which needs the data).
UNDERFIT_ACCURACY = 0.8
PLATEAU = 0.01  # accuracy gained over the last third of the logged epochs


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average (the window shrinks at the ends)."""
    half = max(1, window) // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def check_training_run(
    records: Sequence[dict[str, Any]], *, meta: dict[str, Any] | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """Findings about a run from its records, and the measurements behind them."""
    meta = dict(meta or {})
    if not records:
        how = meta.get("no_step_hint", "call mon.step(loss) after optimizer.step()")
        return [
            Finding(
                "CHECK_SKIPPED",
                "info",
                "the Monitor saw no training step, so there is no run to read",
                fix=how,
            )
        ], {"steps": 0}
    findings: list[Finding] = []
    measured: dict[str, Any] = {"steps": records[-1]["step"]}
    losses = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    curve = _curve(losses, measured)
    findings += _guards(records, curve)
    diverged = bool(findings)
    ratios = _weight_ratios(records)
    bugs = _loop_bugs(records, ratios, measured)
    findings += bugs
    if not bugs:  # a loop bug explains whatever the curves show; report it alone
        judged = _judged_ratios(records)
        rate = _learning_rate(records, curve, judged, measured)
        findings += rate
        findings += _layer_ratios(judged, skip={f.evidence.get("direction") for f in rate})
        if not diverged:  # the scatter and the accuracies of a diverged run mean nothing
            findings += _noise(curve, measured)
            findings += _generalization(records, measured, underfit=not rate)
        findings += _dead_units(records)
    if meta.get("optimizer") and meta.get("optimizer_steps") == 0:
        findings.append(
            Finding(
                "CHECK_SKIPPED",
                "info",
                f"the optimizer given to the Monitor never stepped in {measured['steps']} "
                "steps, so no update ratio was measured",
                fix="pass the optimizer that trains the model (a wrapper's inner optimizer, "
                "e.g. trainer.optimizers[0]), or leave it out",
            )
        )
    return findings, measured


def _guards(records: Sequence[dict[str, Any]], curve: dict[str, Any] | None) -> list[Finding]:
    """NAN_LOSS from the non-finite guard; LOSS_EXPLODED from the explosion guard when the
    smoothed loss confirms it (one batch of a few examples can cost 3x the first loss in a
    run that is learning: that is LOSS_NOISY's business), or when the run is too short to
    smooth."""
    findings = []
    for record in records:
        for alert in record.get("alerts", ()):
            if alert.get("guard") == "nonfinite_loss":
                findings.append(
                    Finding(
                        "NAN_LOSS",
                        "error",
                        alert["message"],
                        fix="lower the learning rate (a NaN loss almost always means it is "
                        "too high); if it stays, look at the layer named for a log/sqrt/"
                        "division of a bad value",
                        evidence={k: alert.get(k) for k in ("layer", "where", "onset_step")}
                        | {"step": record["step"]},
                        layer=alert.get("layer"),
                    )
                )
            elif alert.get("guard") == "loss_exploded" and _confirmed(curve, alert):
                findings.append(
                    Finding(
                        "LOSS_EXPLODED",
                        "error",
                        alert["message"],
                        fix="lower the learning rate about 10x (CS231n: a cost above 3x the "
                        "original means break out early)",
                        evidence={
                            "step": record["step"],
                            "initial_loss": alert.get("initial_loss"),
                            "factor": alert.get("factor"),
                        },
                    )
                )
    return findings


def _confirmed(curve: dict[str, Any] | None, alert: dict[str, Any]) -> bool:
    if curve is None:
        return True
    smoothed = curve["smoothed"]
    return max(smoothed) > alert.get("factor", 3.0) * smoothed[0]


def _curve(losses: list[tuple[int, float]], measured: dict[str, Any]) -> dict[str, Any] | None:
    """The loss curve and its smoothed version; None when too short to read (10 steps)."""
    if len(losses) < 10:
        return None
    steps = [s for s, _ in losses]
    values = [v for _, v in losses]
    window = max(5, int(len(values) * SMOOTH_FRACTION))
    smoothed = smooth(values, window)
    half = len(values) // 2
    curve = {
        "steps": steps,
        "values": values,
        "smoothed": smoothed,
        "drop": 1 - smoothed[-1] / smoothed[0] if smoothed[0] > 0 else None,
        "stalled": min(smoothed[half:]) >= STALL_IMPROVEMENT * min(smoothed[:half]),
    }
    measured["loss"] = {
        "first": values[0],
        "last": values[-1],
        "smoothed_first": smoothed[0],
        "smoothed_last": smoothed[-1],
        "smoothing_window": window,
    }
    return curve


def _weight_ratios(records: Sequence[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Per parameter, its update ratio on every probe step that measured one."""
    ratios: dict[str, list[float | None]] = {}
    for record in records:
        for name, value in (record.get("update_ratios") or {}).items():
            ratios.setdefault(name, []).append(value)
    return ratios


@dataclass
class _Judged:
    """A weight's (or an attention group's) ratios over the probes, as the checkup judges
    them: `scaled`, each ratio times ||W|| / torch's default init norm where ||W|| is below
    it (`below_default_scale`), for "too high"; `normalized`: its output reaches a
    normalization, so it is never "too high"; `members`: an attention group's parameters."""

    ratios: list[float]
    scaled: list[float]
    normalized: bool = False
    members: list[str] = field(default_factory=list)


def _judged_ratios(records: Sequence[dict[str, Any]]) -> dict[str, _Judged]:
    """Per weight, or per attention group in place of its projections' weights (`roles`,
    `update_ratio_groups`: the checkup's rule, babysit.checks.lr), the ratios judged."""
    roles = next((r["roles"] for r in records if r.get("roles")), {})
    groups: dict[str, list[str]] = roles.get("attention") or {}
    normalized = set(roles.get("normalized") or ())
    grouped = {p for members in groups.values() for p in members}
    judged: dict[str, _Judged] = {}
    for record in records:
        scales = record.get("below_default_scale") or {}
        entries = [
            (n, v, scales.get(n, 1.0))
            for n, v in (record.get("update_ratios") or {}).items()
            if "weight" in n.rsplit(".", 1)[-1] and n not in grouped
        ]
        for group, value in (record.get("update_ratio_groups") or {}).items():
            members = groups.get(group, [])
            scale = min((scales.get(m, 1.0) for m in members), default=1.0)
            entries.append((group, value, scale))
        for name, value, scale in entries:
            if value is None:
                continue
            entry = judged.setdefault(
                name,
                _Judged([], [], name in normalized, list(groups.get(name, []))),
            )
            entry.ratios.append(value)
            entry.scaled.append(value * scale)
    return judged


def _median_weight_ratio(judged: dict[str, _Judged]) -> float | None:
    values = [v for entry in judged.values() for v in entry.ratios if v > 0]
    return statistics.median(values) if values else None


def _learning_rate(records, curve, judged, measured) -> list[Finding]:
    total = records[-1]["step"]
    lrs = [(r["step"], r["loop"]["lr"]) for r in records if "lr" in (r.get("loop") or {})]
    if lrs:
        peak = max(lr for _, lr in lrs)
        decayed = next(
            ((s, lr) for s, lr in lrs if peak > 0 and lr < LR_DECAYED_FRACTION * peak), None
        )
        if decayed is not None and decayed[0] <= total / 2:
            return [
                Finding(
                    "LR_TOO_LOW",
                    "warning",
                    f"the learning rate was decayed to {decayed[1]:.2g} ({decayed[1] / peak:.1g}"
                    f" of its peak {peak:.2g}) by step {decayed[0]} of {total}: the rest of the "
                    "run learns nothing",
                    fix="step a per-epoch scheduler once per epoch, not per batch (or size the "
                    "schedule in steps: T_max / total_steps = the run's optimizer steps)",
                    evidence={
                        "cause": "schedule",
                        "direction": "below",
                        "step": decayed[0],
                        "lr": decayed[1],
                        "peak_lr": peak,
                    },
                )
            ]
    median = _median_weight_ratio(judged)
    measured["update_ratio_median"] = median
    if median is None or curve is None:
        return []
    drop = curve["drop"]
    evidence = {"median_update_ratio": median, "target": UPDATE_RATIO_TARGET, "loss_drop": drop}
    if median < RUN_RATIO_LOW and drop is not None and drop < SLOW_DROP:
        return [
            Finding(
                "LR_TOO_LOW",
                "warning",
                f"the loss fell only {drop:.0%} over {total} steps and the median update/weight "
                f"ratio is {median:.1e}, far below ~1e-3",
                fix=f"raise the learning rate about {UPDATE_RATIO_TARGET / median:.0f}x "
                "(CS231n: a loss that falls slowly and linearly means a low learning rate)",
                evidence=evidence | {"direction": "below"},
            )
        ]
    exploded = any(a.get("guard") for r in records for a in r.get("alerts", ()))
    if median > RUN_RATIO_HIGH and (curve["stalled"] or exploded):
        return [
            Finding(
                "LR_TOO_HIGH",
                "warning",
                f"the median update/weight ratio is {median:.1e}, far above ~1e-3, and the "
                "loss " + ("blew up" if exploded else "stopped improving in the second half"),
                fix=f"lower the learning rate about {median / UPDATE_RATIO_TARGET:.0f}x "
                "(CS231n: a loss that drops fast and stalls high means a high learning rate)",
                evidence=evidence | {"direction": "above"},
            )
        ]
    return []


def _layer_ratios(judged: dict[str, _Judged], skip: set) -> list[Finding]:
    """Per weight (an attention's projections as one), a median ratio beyond the checkup's
    limits; not in the direction of a run-wide LR_TOO_LOW/HIGH (`skip`), which already says
    it for every layer."""
    findings = []
    for name, entry in judged.items():
        values = entry.ratios
        if not entry.members and not name.endswith("weight"):
            continue  # an LSTM's weight_ih_l0 counts in the run-wide median only
        if not values or max(values) <= 0:
            continue  # never updated: PARAMS_NOT_UPDATED says so
        median = statistics.median(values)
        high = statistics.median(entry.scaled) > UPDATE_RATIO_MAX and not entry.normalized
        for code, off, word, limit in (
            ("UPDATE_RATIO_LOW", median < UPDATE_RATIO_MIN, "below", UPDATE_RATIO_MIN),
            ("UPDATE_RATIO_HIGH", high, "above", UPDATE_RATIO_MAX),
        ):
            if off and word not in skip:
                what = f"{name} ({', '.join(entry.members)}, as one)" if entry.members else name
                findings.append(
                    Finding(
                        code,
                        "warning",
                        f"{what}: median update/weight ratio {median:.1e} over the run, "
                        f"{word} {limit:g} (CS231n: around 1e-3)",
                        fix=f"{'raise' if word == 'below' else 'lower'} this layer's learning "
                        "rate (a parameter group), or its initialisation scale",
                        evidence={
                            "median": median,
                            "probes": len(values),
                            "range": [UPDATE_RATIO_MIN, UPDATE_RATIO_MAX],
                        }
                        | ({"parameters": entry.members} if entry.members else {}),
                        layer=name if entry.members else name.rsplit(".", 1)[0],
                    )
                )
    return findings


def _noise(curve, measured) -> list[Finding]:
    if curve is None:
        return []
    half = len(curve["values"]) // 2
    values, smoothed = curve["values"][half:], curve["smoothed"][half:]
    # The noise against the curve's scale: what it fell by, or its level if it barely fell
    # (a loss near 0 late in a healthy run is not "noisy" for scattering 50% of itself).
    scale = max(curve["smoothed"][0] - min(curve["smoothed"]), statistics.fmean(smoothed))
    if scale <= 0:
        return []
    cv = statistics.pstdev([v - s for v, s in zip(values, smoothed, strict=True)]) / scale
    measured["loss"]["noise_cv"] = cv
    if cv <= LOSS_NOISY_CV:
        return []
    return [
        Finding(
            "LOSS_NOISY",
            "warning",
            f"in the second half of the run the loss scatters around its smoothed curve by "
            f"{cv:.0%} of the curve's scale: step-to-step noise dominates it",
            fix="use a larger batch (or a lower learning rate for this batch size); CS231n: a "
            "wiggly loss curve means a small batch",
            evidence={"noise_cv": cv, "limit": LOSS_NOISY_CV},
        )
    ]


def _generalization(records, measured, underfit: bool) -> list[Finding]:
    epochs = [
        r
        for r in records
        if r.get("train_accuracy") is not None and r.get("val_accuracy") is not None
    ]
    if not epochs:
        return []
    last = epochs[-1]
    train, val = last["train_accuracy"], last["val_accuracy"]
    measured["accuracy"] = {"train": train, "val": val, "gap": train - val, "logged": len(epochs)}
    evidence = {"train_accuracy": train, "val_accuracy": val, "step": last["step"]}
    if train - val > OVERFIT_GAP:
        return [
            Finding(
                "OVERFITTING",
                "warning",
                f"train accuracy {train:.3f} vs val {val:.3f} at step {last['step']}: a gap of "
                f"{train - val:.3f}, above {OVERFIT_GAP}",
                fix="increase regularization (weight decay, dropout, augmentation) or get "
                "more data (CS231n: a big gap means overfitting)",
                evidence=evidence | {"gap": train - val, "limit": OVERFIT_GAP},
            )
        ]
    third = max(1, len(epochs) // 3)
    gained = train - epochs[-1 - third]["train_accuracy"] if len(epochs) >= 3 else None
    if (
        underfit
        and gained is not None
        and gained < PLATEAU
        and max(train, val) < UNDERFIT_ACCURACY
        and abs(train - val) < OVERFIT_GAP / 2
    ):
        return [
            Finding(
                "UNDERFITTING",
                "warning",
                f"train accuracy {train:.3f} and val {val:.3f} are both low and no longer "
                "rising: the model lacks capacity (or the rate is off)",
                fix="increase model capacity (width, depth) or train with a better rate "
                "(CS231n: no gap and low accuracy means increase capacity)",
                evidence=evidence | {"gained_last_third": gained, "limit": UNDERFIT_ACCURACY},
            )
        ]
    return []


def _dead_units(records) -> list[Finding]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for layer in record.get("layers") or ():
            if layer.get("dead_fraction") is not None:
                series.setdefault(layer["name"], []).append(
                    (record["step"], layer["dead_fraction"])
                )
    findings = []
    for name, points in series.items():
        if len(points) < 4:
            continue
        first = points[0][1]
        late = statistics.median(v for _, v in points[-max(1, len(points) // 4) :])
        if late - first >= DEAD_GROWTH and late >= DEAD_GROWTH:
            findings.append(
                Finding(
                    "DEAD_UNITS",
                    "warning",
                    f"{name}: the dead fraction grew from {first:.0%} at step {points[0][0]} "
                    f"to {late:.0%} late in the run: ReLUs are dying during training",
                    fix="lower the learning rate (dying ReLUs follow large updates), or use "
                    "Leaky ReLU / ELU",
                    evidence={"first": first, "late": late, "probes": len(points)},
                    layer=name,
                )
            )
    return findings


def _loop_bugs(records, ratios, measured) -> list[Finding]:
    loops = [(r["step"], r["loop"]) for r in records if r.get("loop")]
    findings = []
    checked = [(s, loop["stale_gradient"]) for s, loop in loops if "stale_gradient" in loop]
    stale = [(s, names) for s, names in checked if names]
    measured["gradient_checks"] = {"checked": len(checked), "carried_over": len(stale)}
    if len(checked) >= 2 and len(stale) >= STALE_FRACTION * len(checked):
        norms = _grad_norms(records, stale[0][1][0])
        growth = f"; {stale[0][1][0]}'s gradient norm went from {norms[0]:.3g} to {norms[-1]:.3g}"
        findings.append(
            Finding(
                "GRAD_ACCUMULATING",
                "error",
                f"gradients are never zeroed: on {len(stale)} of {len(checked)} checked steps "
                "the weights still held the previous steps' gradients when backward ran"
                + (growth if len(norms) >= 2 else ""),
                fix="call optimizer.zero_grad() once per optimizer step (before backward, or "
                "right after optimizer.step())",
                evidence={
                    "steps": [s for s, _ in stale[:10]],
                    "layers": stale[0][1],
                    "grad_norms": norms[:2] + norms[-1:],
                },
            )
        )
    first = next((loop for _, loop in loops if "not_in_optimizer" in loop), {})
    missing, frozen = first.get("not_in_optimizer", []), set(first.get("frozen", []))
    if missing:
        findings.append(
            Finding(
                "PARAMS_NOT_UPDATED",
                "error",
                f"{len(missing)} trainable parameters are not in the optimizer: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                fix="build the optimizer from model.parameters() (or set requires_grad=False "
                "on the parameters you freeze on purpose)",
                evidence={"parameters": missing, "cause": "not in the optimizer"},
            )
        )
    still = [
        name
        for name, series in ratios.items()
        if name not in frozen
        and len(series) >= 2
        and not any(v is not None and v > 0 for v in series)
    ]
    if still:
        findings.append(
            Finding(
                "PARAMS_NOT_UPDATED",
                "error",
                f"{len(still)} parameters never changed at an optimizer step: "
                f"{', '.join(still[:5])}{' ...' if len(still) > 5 else ''}; no gradient reached "
                "them (detached from the loss or unused), or it was cleared before the step",
                fix="check that the loss depends on them (no .detach()/.data in forward) and "
                "that zero_grad() comes before backward(), not between backward() and step()",
                evidence={"parameters": still, "probes": min(len(ratios[n]) for n in still)},
            )
        )
    moded = [loop for _, loop in loops if loop.get("mode_layers")]
    in_eval = [loop for loop in moded if loop.get("mode_layers_training") == 0]
    if moded and len(in_eval) >= EVAL_MODE_FRACTION * len(moded):
        findings.append(
            Finding(
                "EVAL_MODE_TRAINING",
                "warning",
                f"on {len(in_eval)} of {len(moded)} probed optimizer steps every dropout and "
                f"BatchNorm module ({moded[0]['mode_layers']}) was in eval mode: the model "
                "trains without dropout and with frozen BatchNorm statistics",
                fix="call model.train() before each training epoch (after the validation "
                "pass's model.eval())",
                evidence={"eval_steps": len(in_eval), "probed_steps": len(moded)},
            )
        )
    return findings


def _grad_norms(records, layer: str) -> list[float]:
    return [
        entry["weight_grad_norm"]
        for record in records
        for entry in record.get("layers") or ()
        if entry["name"] == layer and entry.get("weight_grad_norm") is not None
    ]
