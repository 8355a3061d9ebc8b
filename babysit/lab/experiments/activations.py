"""activations: the lecture's seven activation functions trained on the same task and budget,
each at the learning rate that makes it fastest: how many steps each needs to reach a target
training error, and the mean of its activations.

Claims from Krizhevsky, Sutskever & Hinton (NIPS 2012, Fig. 1: ReLU reaches 25% training error
on CIFAR-10 six times faster than tanh), the lecture (sigmoid is the worst choice) and Clevert,
Unterthiner & Hochreiter (ICLR 2016: ELU's mean activation is closer to zero, and it learns
faster than ReLU). The network is the ELU paper's MNIST one (8 hidden layers of 128, He init,
batch 64), on digits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from babysit.lab.base import (
    Claim,
    Result,
    Setup,
    below,
    digits,
    fmt,
    separated,
    spread,
    steps_spread,
)
from babysit.lab.drawing import error_race, grid, labelled, layer_numbers, new_figure
from babysit.lab.measure import ERROR_SAMPLE, Run, Training, error_curves, tune_lr
from babysit.nn import mlp
from babysit.probes import Hooks, select_layers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Activation functions: speed to a target error, mean activation"
ORDER = 3
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout")

# Learning rates tried at full scale: half-decades from 3e-4 to 3e-1.
FULL_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
SETTINGS = {
    "tiny": {"layers": 2, "width": 16, "budget": 60, "lrs": (0.03, 0.1), "seeds": 1},
    # In a sweep over 1e-3..1e-1 (our measurement, one seed), 1e-3 and 3e-3 were slower than
    # 1e-2 for every activation, and the slowest non-sigmoid net needed 170 steps: a
    # 400-step budget leaves 2x margin. The sigmoid net did not learn at any rate up to 3.
    "small": {"layers": 8, "width": 128, "budget": 400, "lrs": (1e-2, 3e-2, 1e-1), "seeds": 3},
    "full": {"layers": 8, "width": 128, "budget": 2000, "lrs": FULL_LRS, "seeds": 10},
}
OPTIMIZER = "momentum"  # SGD with momentum 0.9, Krizhevsky et al.'s
ERROR_EVERY = 5  # steps between two measurements of the training error

# Krizhevsky et al. count epochs to 25% training error on CIFAR-10; digits is far easier (a
# linear classifier gets ~4%), so 25% is reached in a handful of steps by every net. 2% is
# stricter and still reached by the fast nets within 100 steps.
TARGET_ERROR = 0.02
# "Several times faster": at least 2x in median steps. Krizhevsky et al. measured 6x.
SPEEDUP = 2.0


def _mean_activations(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Mean output of each activation layer on `x`, in eval mode."""
    chosen = [(n, m) for n, m in select_layers(model) if not isinstance(m, nn.Linear)]
    means: dict[str, float] = {}

    def keep(name: str, _module: nn.Module, output: torch.Tensor) -> None:
        means[name] = float(output.mean())

    was_training = model.training
    model.eval()
    with torch.no_grad(), Hooks(chosen, forward=keep):
        model(x)
    model.train(was_training)
    return [means[n] for n, _ in chosen]


def run(setup: Setup) -> Result:
    s, seeds = setup.settings, setup.seeds
    measured = _measure(setup)
    steps, means = measured["steps"], measured["means"]
    table = [
        {
            "activation": act,
            "lr": measured["lr"][act],
            "steps": steps[act],
            "median_steps": steps_spread(steps[act]).median,
            "mean_activation": [spread(col).median for col in zip(*means[act], strict=True)],
        }
        for act in ACTIVATIONS
    ]
    return setup.result(
        summary=(
            "The same 8-layer MLP with each activation, each at its fastest learning rate: "
            "steps to reach a strict training error. Sigmoid's deep net barely learns; the "
            "ReLU family, ELU and Maxout learn quickly; ELU's units average closer to zero."
        ),
        setting=(
            f"digits (standardized), MLP 64 -> {s['layers']} x {s['width']} -> 10 (Maxout: k=2), "
            f"He init with each activation's gain, SGD momentum 0.9, batch 64, at most "
            f"{s['budget']} steps; learning rate per activation from "
            f"{', '.join(f'{v:g}' for v in s['lrs'])}: the one with the fewest median steps "
            f"over seeds {seeds[0]}..{seeds[-1]}; median [min, max] over those seeds; "
            f"training error on {ERROR_SAMPLE} training images every {ERROR_EVERY} steps"
        ),
        claims=claims(steps, means, s["budget"], len(seeds)),
        data={
            "target": TARGET_ERROR,
            "budget": s["budget"],
            "table": table,
            "tuning": measured["tuning"],
            "curves": measured["curves"],
        },
    )


def _measure(setup: Setup) -> dict[str, dict]:
    """Per activation: its learning rate tuned for speed, and at that rate, per seed, the
    steps to the target, the error curve and each layer's mean activation at the end."""
    s, seeds, device = setup.settings, setup.seeds, setup.device
    tick = setup.ticker(len(ACTIVATIONS) * len(s["lrs"]) * len(seeds))
    training = Training(s["budget"], TARGET_ERROR, ERROR_EVERY, OPTIMIZER, device)

    def one_run(act: str, lr: float, seed_: int) -> Run:
        train, _ = digits(seed_)
        torch.manual_seed(seed_)
        model = mlp(64, [s["width"]] * s["layers"], 10, act, "he").to(device)
        result = training.run(model, train, lr, seed_)
        tick(f"{act}, lr {lr:g}, seed {seed_}")
        return result

    measured: dict[str, dict] = {"lr": {}, "tuning": {}, "steps": {}, "curves": {}, "means": {}}
    for act in ACTIVATIONS:
        lr, runs = tune_lr(lambda lr_, seed_, a=act: one_run(a, lr_, seed_), s["lrs"], seeds)
        chosen = runs[lr]
        measured["lr"][act] = lr
        measured["tuning"][act] = {f"{k:g}": [r.steps for r in rs] for k, rs in runs.items()}
        measured["steps"][act] = [r.steps for r in chosen]
        measured["curves"][act] = error_curves(chosen)
        measured["means"][act] = [
            _mean_activations(r.model, digits(seed_)[0][0].to(device))
            for r, seed_ in zip(chosen, seeds, strict=True)
        ]
    return measured


def claims(
    steps: dict[str, list], means: dict[str, list], budget: int, n_seeds: int
) -> list[Claim]:
    """ReLU vs tanh, sigmoid last, ELU's mean and speed against ReLU's."""

    def steps_text(act: str) -> str:
        reached = sum(v is not None for v in steps[act])
        suffix = "" if reached == n_seeds else f" (reached in {reached}/{n_seeds} seeds)"
        return f"{act} {fmt(steps_spread(steps[act]))}{suffix}"

    spreads = {act: steps_spread(steps[act]) for act in ACTIVATIONS}
    relu, tanh, sigmoid, elu = (spreads[a] for a in ("relu", "tanh", "sigmoid", "elu"))
    ratio = tanh.median / relu.median if relu.median > 0 else math.nan
    others = [a for a in ACTIVATIONS if a != "sigmoid"]
    elu_mean = spread([sum(abs(m) for m in ms) / len(ms) for ms in means["elu"]])
    relu_mean = spread([sum(abs(m) for m in ms) / len(ms) for ms in means["relu"]])
    return [
        Claim(
            text=f"ReLU reaches {TARGET_ERROR:.0%} training error several times faster than tanh",
            source="Krizhevsky et al., NIPS 2012, Fig. 1 (6x on CIFAR-10)",
            expected=f"tanh / ReLU median steps >= {SPEEDUP:g}, ranges apart",
            measured=f"steps {steps_text('relu')}; {steps_text('tanh')}; ratio {fmt(ratio)}",
            passed=ratio >= SPEEDUP and separated(relu.values, tanh.values),
            exception=(
                "on digits an 8x128 tanh net, He-initialised with tanh's gain 5/3 and given "
                "its own best learning rate, trains as fast as ReLU: digits is nearly linearly "
                "separable and tanh is near-linear around 0. Krizhevsky et al.'s 6x is for a "
                "4-layer conv net on CIFAR-10, where tanh units saturate; seeing it needs "
                "that data and model, which the lab does not run (CIFAR-10 is not bundled)."
            ),
            values={"ratio": ratio},
        ),
        Claim(
            text="Sigmoid is the slowest of the seven",
            source="CS231n Lecture 6; Glorot & Bengio, AISTATS 2010",
            expected="sigmoid's steps above every other activation's, ranges apart",
            measured=f"steps {steps_text('sigmoid')}; fastest other "
            f"{min(spreads[a].median for a in others):g}, slowest other "
            f"{max(spreads[a].median for a in others):g} (within {budget} steps, inf = never)",
            passed=all(separated(spreads[a].values, sigmoid.values) for a in others),
            values={"sigmoid_steps": sigmoid.median},
        ),
        Claim(
            text="ELU's mean activation is closer to zero than ReLU's",
            source="Clevert et al., ICLR 2016, Sec. 3 and Fig. 2",
            expected="mean over layers of |mean activation|: ELU < ReLU, ranges apart",
            measured=f"ELU {fmt(elu_mean)}; ReLU {fmt(relu_mean)} (at the end of training)",
            **below({"elu": elu_mean, "relu": relu_mean}, lower="elu"),
        ),
        Claim(
            text="ELU learns faster than ReLU",
            source="Clevert et al., ICLR 2016, Fig. 2 (MNIST, curves)",
            expected="ELU's steps to the target below ReLU's, ranges apart",
            measured=f"steps {steps_text('elu')}; {steps_text('relu')}",
            exception=(
                "on digits the fast activations all reach the target within a few dozen steps "
                "and the difference is inside the seed spread; Clevert et al. show it on "
                "MNIST curves over many epochs, so it needs a harder task or more seeds "
                "(--scale full)."
            ),
            **below({"elu": elu, "relu": relu}, lower="elu"),
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


_ACTIVATION_COLORS = {
    "sigmoid": "#7f7f7f",
    "tanh": "#d62728",
    "relu": "#1f77b4",
    "leaky_relu": "#aec7e8",
    "prelu": "#9467bd",
    "elu": "#2ca02c",
    "maxout": "#ff7f0e",
}


def figures(data: dict) -> list[tuple[Figure, str]]:
    table_ = data["table"]
    fig = new_figure(12, 3.9)
    ax_curve, ax_bar, ax_mean = fig.subplots(1, 3)
    error_race(ax_curve, ax_bar, data, "activation", _ACTIVATION_COLORS)
    for row in table_:
        means = row["mean_activation"]
        width = 2.5 if row["activation"] in ("relu", "elu") else 1
        ax_mean.plot(
            layer_numbers(len(means)),
            means,
            marker="o",
            ms=3,
            lw=width,
            label=row["activation"],
            color=_ACTIVATION_COLORS.get(row["activation"]),
        )
    ax_mean.axhline(0, color="black", lw=0.8)
    labelled(
        ax_mean,
        "mean activation per layer, after training",
        "hidden layer",
        "mean output",
        legend=7,
    )
    grid(ax_curve, ax_bar, ax_mean)
    return [
        (
            fig,
            "Left: training error (median over seeds, band: min..max), each activation at "
            "its own fastest learning rate. Middle: steps to the target (bar: median, line: "
            "min..max; hatched: not reached within the budget). Right: the mean output of "
            "each hidden layer at the end of training; ELU sits closer to zero than ReLU.",
        )
    ]
