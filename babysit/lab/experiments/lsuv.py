"""lsuv: orthogonal and LSUV init against Xavier and He on a deep ReLU net (Mishkin & Matas,
ICLR 2016): the output variance of every layer right after init, and how fast training starts.

LSUV (layer-sequential unit-variance) starts from orthonormal weights (Saxe, McClelland &
Ganguli, ICLR 2014) and rescales each layer, in forward order, until its output has unit
variance on one minibatch: `babysit.nn.lsuv_`, with the authors' Tol = 0.02, T_max = 20.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from babysit.lab.base import Claim, Result, Setup, digits, fmt, separated, spread, steps_spread
from babysit.lab.drawing import (
    INIT_COLORS,
    grid,
    labelled,
    layer_band,
    new_figure,
    ragged_band,
    steps_bars,
)
from babysit.lab.measure import ERROR_SAMPLE, Training
from babysit.nn import mlp
from babysit.nn.init import LSUV_TOLERANCE, lsuv_
from babysit.probes import activation_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "LSUV and orthogonal init vs Xavier and He on a deep net"
ORDER = 8
SOURCE = "Mishkin & Matas, ICLR 2016"
INITS = ("xavier", "he", "orthogonal", "lsuv")

SETTINGS = {
    "tiny": {"layers": 10, "width": 32, "budget": 100, "seeds": 1},
    "small": {"layers": 20, "width": 64, "budget": 400, "seeds": 3},
    "full": {"layers": 30, "width": 256, "budget": 2000, "seeds": 5},
}
# As in the depth experiment: SGD momentum 0.9 at 2e-3, where a deep plain ReLU MLP with He
# init trains smoothly on digits (our measurement).
OPTIMIZER = "momentum"
LR = 2e-3
LSUV_BATCH = 256  # "one minibatch" (the paper); its examples come from the training split
ERROR_EVERY = 10
# "Early training": steps to 10% training error (chance: 90%), a point every net that trains
# at all passes within the budget at this depth; nets that get there sooner started faster.
TARGET_ERROR = 0.1
# "Unit variance" after init, read on held-out examples (not the batch LSUV fitted on): every
# layer's output variance within a factor 2 of 1. A factor 2 is what one ReLU layer under
# Xavier init loses; the fitted batch itself is within Tol = 0.02 by construction.
VARIANCE_FACTOR = 2.0


def run(setup: Setup) -> Result:
    s, seeds = setup.settings, setup.seeds
    measured = _measure(setup)
    return setup.result(
        summary=(
            f"A {s['layers']}-layer ReLU MLP from four inits. Xavier's variance halves at "
            "every layer; He's keeps it on average but wanders from layer to layer; LSUV "
            "measures and fixes it, layer by layer, to 1. Orthogonal and LSUV nets start "
            "learning sooner."
        ),
        setting=(
            f"digits (standardized), MLP 64 -> {s['layers']} x {s['width']} ReLU -> 10, SGD "
            f"momentum 0.9, lr {LR:g}, batch 64, at most {s['budget']} steps; orthogonal with "
            f"ReLU's gain sqrt 2; LSUV on {LSUV_BATCH} training images (Tol "
            f"{LSUV_TOLERANCE:g}); variance of each Linear layer's output on {2 * LSUV_BATCH} "
            f"other training images; training error on {ERROR_SAMPLE} training images every "
            f"{ERROR_EVERY} steps; "
            f"{len(seeds)} seeds, median [min, max]"
        ),
        claims=claims(measured, s["budget"]),
        data={"target": TARGET_ERROR, "budget": s["budget"], **measured},
    )


def _measure(setup: Setup) -> dict:
    """Per init, per seed: each layer's output variance right after init, then the steps to
    the target and the error curve; and LSUV's rescalings per layer, per seed."""
    s, seeds, device = setup.settings, setup.seeds, setup.device
    training = Training(s["budget"], TARGET_ERROR, ERROR_EVERY, OPTIMIZER, device)
    tick = setup.ticker(len(seeds) * len(INITS))
    variances: dict[str, list] = {init: [] for init in INITS}
    steps: dict[str, list] = {init: [] for init in INITS}
    curves: dict[str, dict] = {init: {"steps": [], "errors": []} for init in INITS}
    iterations: list[list[int]] = []
    for seed_ in seeds:
        train, _ = digits(seed_)
        # Training images LSUV did not fit on. Not the validation split: standardizing
        # digits divides pixels that are almost always 0 in train by a tiny std, and a val
        # image that lights one up has a huge input variance, whatever the init.
        held_out = train[0][LSUV_BATCH : 3 * LSUV_BATCH]
        for init in INITS:
            torch.manual_seed(seed_)
            hidden = [s["width"]] * s["layers"]
            if init == "lsuv":
                model = mlp(64, hidden, 10, "relu", "he")
                report = lsuv_(model, train[0][:LSUV_BATCH])
                iterations.append([int(r["iterations"]) for r in report.values()])
            else:
                model = mlp(64, hidden, 10, "relu", init)
            model.to(device)
            stats = activation_stats(model, held_out.to(device), layers=[nn.Linear])
            variances[init].append([st.std**2 for st in stats])
            result = training.run(model, train, LR, seed_)
            steps[init].append(result.steps)
            curves[init]["steps"].append(result.error_steps)
            curves[init]["errors"].append(result.errors)
            tick(f"{init} init, seed {seed_}")
    return {
        "variances": variances,
        "steps": steps,
        "curves": curves,
        "iterations": iterations,
    }


def claims(measured: dict, budget: int) -> list[Claim]:
    """Unit variance after LSUV; orthogonal and LSUV start faster than Xavier and He."""
    variances, iterations = measured["variances"], measured["iterations"]
    lsuv_low = spread([min(v) for v in variances["lsuv"]])
    lsuv_high = spread([max(v) for v in variances["lsuv"]])
    xavier_top = spread([v[-2] for v in variances["xavier"]])  # the last hidden layer
    spreads = {init: steps_spread(measured["steps"][init]) for init in INITS}
    fast = {init: spreads[init] for init in ("orthogonal", "lsuv")}
    slow = {init: spreads[init] for init in ("xavier", "he")}
    return [
        Claim(
            text="After LSUV every layer's output has unit variance",
            source=SOURCE + ", Algorithm 1",
            expected=f"every layer within {1 / VARIANCE_FACTOR:g}..{VARIANCE_FACTOR:g} on "
            f"images it was not fitted on (|Var - 1| < {LSUV_TOLERANCE:g} on the fitted "
            "batch, by the stopping rule)",
            measured=f"lowest layer {fmt(lsuv_low)}, highest {fmt(lsuv_high)}; Xavier's last "
            f"hidden layer {fmt(xavier_top)}; LSUV rescalings per layer "
            f"{min(min(i) for i in iterations)}..{max(max(i) for i in iterations)}",
            passed=lsuv_low.low >= 1 / VARIANCE_FACTOR and lsuv_high.high <= VARIANCE_FACTOR,
            values={"min_variance": lsuv_low.median, "max_variance": lsuv_high.median},
        ),
        Claim(
            text=f"Orthogonal and LSUV init start training faster than Xavier and He (steps to "
            f"{TARGET_ERROR:.0%} training error)",
            source=SOURCE + ", Sec. 4; Saxe et al., ICLR 2014",
            expected="each of orthogonal, LSUV below each of Xavier, He, ranges apart",
            measured="; ".join(f"{init} {fmt(value)}" for init, value in {**slow, **fast}.items())
            + f" (inf = not within {budget} steps)",
            passed=all(separated(f.values, w.values) for f in fast.values() for w in slow.values()),
            values={init: spreads[init].median for init in INITS},
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


def figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_var, ax_curve, ax_bar = fig.subplots(1, 3)
    inits = list(data["variances"])
    for init in inits:
        variances = data["variances"][init]
        layer_band(ax_var, variances, f"{init}", INIT_COLORS[init])
        curve = data["curves"][init]
        ragged_band(ax_curve, curve["steps"], curve["errors"], init, color=INIT_COLORS[init])
    ax_var.axhline(1.0, color="black", lw=0.8)
    ax_var.set_yscale("log")
    labelled(
        ax_var,
        "output variance of each layer at init",
        "layer (last = logits)",
        "variance (log scale)",
    )
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    labelled(ax_curve, "training error while training", "SGD step", "training error", ylim=(0, 1))
    steps_bars(
        ax_bar,
        inits,
        [data["steps"][i] for i in inits],
        data["budget"],
        [INIT_COLORS[i] for i in inits],
    )
    ax_bar.set_title(f"steps to {data['target']:.0%} training error")
    grid(ax_var, ax_curve, ax_bar)
    return [
        (
            fig,
            "Left: the variance of each layer's output right after init, on training images "
            "LSUV was not fitted on (median over seeds, band: min..max). Middle and right: "
            "training error, and steps to the target, from each init.",
        )
    ]
