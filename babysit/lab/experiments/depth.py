"""depth: a 30-layer ReLU network trained from Xavier and from He init (He, Zhang, Ren & Sun,
ICCV 2015, Fig. 3): with He's sqrt(2/n) the deep net trains; with Xavier it stalls.

Xavier's N(0, 1/n) halves the variance of a ReLU layer's output at every layer (He et al.,
eq. 10), so after 30 layers the signal, and on the way back the gradient, is ~2^-15 of what it
was. We port the paper's 27-conv + 3-fc net to a 30-layer MLP on digits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from babysit.lab.base import Claim, Result, Setup, digits, fmt, spread
from babysit.lab.drawing import INIT_COLORS, grid, labelled, layer_band, new_figure, ragged_band
from babysit.lab.measure import ERROR_SAMPLE, Training
from babysit.nn import mlp
from babysit.probes import activation_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Depth: a 30-layer ReLU net, Xavier vs He init"
ORDER = 2
SOURCE = "He et al., ICCV 2015, Fig. 3"
INITS = ("xavier", "he")

# The paper: 30 layers, SGD momentum 0.9, lr 1e-2. On our MLP, lr 1e-2 with momentum made
# He's loss spike and restart in 3 of 3 seeds (our measurement); 2e-3 trains smoothly, so we
# use it for both inits (Xavier stalls at either rate).
SETTINGS = {
    "tiny": {"layers": 30, "width": 32, "budget": 60, "lr": 2e-3, "seeds": 1, "every": 20},
    "small": {"layers": 30, "width": 64, "budget": 460, "lr": 2e-3, "seeds": 3, "every": 10},
    "full": {"layers": 30, "width": 256, "budget": 2000, "lr": 2e-3, "seeds": 5, "every": 20},
}
MOMENTUM_OPTIMIZER = "momentum"  # SGD with momentum 0.9, the paper's

# "Trains": the training error falls to 20% (chance is 90% for 10 classes) within the budget.
# A line of ours: the paper plots error curves without naming a threshold.
TRAINED_ERROR = 0.2
# "Stalls": the training error stays above 80% for the whole budget, i.e. within 10 points of
# chance; the paper's Xavier curve at 30 layers is flat ("completely stalls").
STALLED_ERROR = 0.8
# At init, Xavier's weight gradients are ~2^(-L/2) of He's (the forward signal and the
# backward gradient each lose half their variance per layer): ~3e-5 for L = 30. We call
# "vanishing" anything below 1e-3 of He's, a margin of 30x over the theory.
GRADIENT_RATIO = 1e-3


def run(setup: Setup) -> Result:
    s, seeds = setup.settings, setup.seeds
    measured = _measure(setup)
    return setup.result(
        summary=(
            "A deep plain ReLU net trained from two inits that differ only by a factor sqrt(2) "
            "in the weights' std. He's init keeps the signal's variance through all 30 layers "
            "and the net trains; Xavier's halves it at each layer, the gradients reaching the "
            "weights are ~2^-15 of He's, and training does not start."
        ),
        setting=(
            f"digits (standardized), MLP 64 -> {s['layers']} x {s['width']} ReLU -> 10, SGD "
            f"momentum 0.9, lr {s['lr']:g} (the paper's 1e-2 made He's run spike here), batch "
            f"64, {s['budget']} steps; training error on {ERROR_SAMPLE} training images every "
            f"{s['every']} steps; {len(seeds)} seeds (data split and init), median [min, max]"
        ),
        claims=claims(measured, s, len(seeds)),
        data={
            "error_steps": measured["curve_steps"],
            "errors": measured["curves"],
            "grad_norms": measured["grads"],
            "target": TRAINED_ERROR,
            "stalled": STALLED_ERROR,
        },
    )


def _measure(setup: Setup) -> dict[str, dict[str, list]]:
    """Per init, per seed: the weight-gradient norms at init, the training-error curve, the
    step it reached TRAINED_ERROR (None: never) and its final error."""
    s, seeds, device = setup.settings, setup.seeds, setup.device
    training = Training(
        s["budget"], TRAINED_ERROR, s["every"], MOMENTUM_OPTIMIZER, device, stop_at_target=False
    )
    tick = setup.ticker(len(seeds) * len(INITS))
    measured: dict[str, dict[str, list]] = {
        what: {init: [] for init in INITS}
        for what in ("curves", "reached", "final", "grads", "curve_steps")
    }
    for seed_ in seeds:
        train, _ = digits(seed_)
        probe = (train[0][:512].to(device), train[1][:512].to(device))
        for init in INITS:
            torch.manual_seed(seed_)
            model = mlp(64, [s["width"]] * s["layers"], 10, "relu", init).to(device)
            layer_stats = activation_stats(model, *probe, layers=[nn.Linear])
            measured["grads"][init].append([st.weight_grad_norm for st in layer_stats])
            run_ = training.run(model, train, s["lr"], seed_)
            measured["curve_steps"][init].append(run_.error_steps)
            measured["curves"][init].append(run_.errors)
            measured["reached"][init].append(run_.steps)
            measured["final"][init].append(run_.final_error)
            tick(f"{init} init, seed {seed_}")
    return measured


def claims(measured: dict[str, dict[str, list]], s: dict, n_seeds: int) -> list[Claim]:
    """He trains, Xavier stalls meanwhile, and why: Xavier's gradients vanish at init."""
    curves, reached, curve_steps = measured["curves"], measured["reached"], measured["curve_steps"]
    he_final, xavier_final = spread(measured["final"]["he"]), spread(measured["final"]["xavier"])
    he_steps = [r for r in reached["he"] if r is not None]
    xavier_steps = [r for r in reached["xavier"] if r is not None]
    # Xavier's error at the logged step where He's (same seed) first reached the target.
    xavier_then = [
        curve[at.index(he_step)]
        for curve, at, he_step in zip(
            curves["xavier"], curve_steps["xavier"], reached["he"], strict=True
        )
        if he_step is not None and he_step in at
    ]
    ratios = [
        [x / h for x, h in zip(xs, hs, strict=True)]
        for xs, hs in zip(measured["grads"]["xavier"], measured["grads"]["he"], strict=True)
    ]
    worst = spread([max(r) for r in ratios])
    theory = 2 ** (-s["layers"] / 2)
    return [
        Claim(
            text=f"With He init the {s['layers']}-layer ReLU net trains",
            source=SOURCE,
            expected=f"training error <= {TRAINED_ERROR:.0%} within {s['budget']} steps, "
            f"every seed",
            measured=f"reached in {len(he_steps)}/{n_seeds} seeds, at step "
            f"{fmt(spread(he_steps)) if he_steps else 'never'}; final error {fmt(he_final)}",
            passed=len(he_steps) == n_seeds,
            values={"final_error": he_final.median},
        ),
        Claim(
            text="With Xavier init the same net stalls: it is still at chance when He's has "
            "trained",
            source=SOURCE,
            expected=f"Xavier's training error > {STALLED_ERROR:.0%} (chance: 90%) at the step "
            f"where He's reaches {TRAINED_ERROR:.0%}, same seed",
            measured=f"Xavier's error then {fmt(spread(xavier_then)) if xavier_then else '-'}; "
            f"Xavier reached {TRAINED_ERROR:.0%} in {len(xavier_steps)}/{n_seeds} seeds "
            f"within {s['budget']} steps (final error {fmt(xavier_final)})",
            passed=bool(xavier_then) and min(xavier_then) > STALLED_ERROR,
            values={"error_when_he_trained": spread(xavier_then).median if xavier_then else None},
        ),
        Claim(
            text="Why: at init, Xavier's weight gradients vanish at every layer",
            source="He et al., ICCV 2015, Sec. 2.2",
            expected=f"Xavier / He weight-gradient norm < {GRADIENT_RATIO:g} at every layer",
            measured=f"largest ratio over layers {fmt(worst)} (theory ~2^-{s['layers'] / 2:g}"
            f" = {fmt(theory)})",
            passed=worst.high < GRADIENT_RATIO,
            values={"max_ratio": worst.median},
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


def figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(11, 3.8)
    ax_error, ax_grad = fig.subplots(1, 2)
    for init in ("he", "xavier"):
        ragged_band(
            ax_error,
            data["error_steps"][init],
            data["errors"][init],
            f"{init} init",
            color=INIT_COLORS[init],
        )
        grads = data["grad_norms"][init]
        layer_band(ax_grad, grads, f"{init} init", INIT_COLORS[init])
    ax_error.axhline(0.9, color="gray", ls=":", lw=1, label="chance (90%)")
    ax_error.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    labelled(
        ax_error,
        "30-layer ReLU net: He trains, Xavier stalls",
        "SGD step",
        "training error",
        ylim=(0, 1),
    )
    ax_grad.set_yscale("log")
    labelled(
        ax_grad,
        "why: weight-gradient norm at init, per layer",
        "layer (31 = logits)",
        "||dL/dW|| (log scale)",
    )
    grid(ax_error, ax_grad)
    return [
        (
            fig,
            "Left: training error on 512 training images (median over seeds, band: "
            "min..max). Right: the norm of each layer's weight gradient at init; Xavier's are "
            "~2^-15 of He's at every layer, so its steps barely move the weights.",
        )
    ]
