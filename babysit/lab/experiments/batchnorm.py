"""batchnorm: the same fully connected nets with and without batch normalization (Ioffe &
Szegedy, ICML 2015): BN trains at learning rates where the plain net diverges, reaches a
target accuracy in fewer steps, cares less about the init, and keeps the distribution of a
hidden layer's input stable while the weights below it change.

The paper's MNIST experiment (Fig. 1) ports to digits as is: 3 hidden layers of 100 sigmoid
units, batch 60. Its learning-rate claim comes from Inception, a ReLU network, so that claim
uses the same net with ReLU units.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from babysit.lab.base import Claim, Result, Setup, below, digits, fmt, spread, steps_spread
from babysit.lab.drawing import grid, labelled, new_figure, ragged_band
from babysit.lab.measure import Run, Training
from babysit.nn import mlp
from babysit.probes import Hooks
from babysit.train import EvaluateEvery

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Batch normalization: learning rate, speed, init, stable inputs"
ORDER = 5
SOURCE = "Ioffe & Szegedy, ICML 2015"

SETTINGS = {
    "tiny": {"budget": 150, "lr_budget": 100, "lrs": (0.3, 3.0), "seeds": 1, "every": 10},
    "small": {
        "budget": 1000,
        "lr_budget": 300,
        "lrs": (0.1, 0.3, 1.0, 3.0),
        "seeds": 3,
        "every": 10,
    },
    "full": {
        "budget": 10000,
        "lr_budget": 2000,
        "lrs": (0.1, 0.3, 1.0, 3.0, 10.0),
        "seeds": 5,
        "every": 50,
    },
}
HIDDEN = [100, 100, 100]  # the paper's MNIST net
BATCH = 60  # the paper's
# The paper does not state its learning rate. With plain SGD on digits, 1.0 is the largest
# rate in 0.1, 0.3, 1, 3 at which the plain sigmoid net trained in every seed (our sweep).
LR = 1.0
INITS = ("xavier", "small", "large")
# Val accuracy target: 90%, i.e. val error 10% (the nets reach ~96-97% on digits).
TARGET_ERROR = 0.1
PROBE_EXAMPLES = 512  # the fixed batch whose sigmoid inputs are tracked (Fig. 1b, c)
PERCENTILES = (0.15, 0.5, 0.85)  # the paper's 15th, 50th and 85th
NETS = (("plain", False), ("bn", True))


class InputPercentiles(EvaluateEvery):
    """Every `every` steps, the 15/50/85th percentiles of each unit's input to the last
    sigmoid layer, on a fixed batch, as the network computes it in training (batch
    statistics for BN; the model's state, BN running averages included, is left as it was);
    `values` holds one (3 percentiles, units) tensor per logged step.
    """

    def __init__(self, x: Tensor, layer: str, every: int):
        super().__init__(self._percentiles, (x,), every=every, mode="train")
        self.layer = layer

    def _percentiles(self, model, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        layer = [(self.layer, model.get_submodule(self.layer))]
        with Hooks(layer, forward=lambda _n, _m, out: captured.append(out)):
            model(x)
        q = torch.tensor(PERCENTILES, device=captured[0].device)
        return torch.quantile(captured[0], q, dim=0).cpu()


def _drift(values: list[Tensor]) -> Tensor:
    """Per unit: the largest move of its median input from where it started, in units of the
    widest 15-85 percentile spread it had during the run (so that a distribution that only
    widens, or starts narrow, does not count as drifting far)."""
    series = torch.stack(values)  # (steps, 3, units)
    move = (series[:, 1] - series[0, 1]).abs().amax(dim=0)
    widest = (series[:, 2] - series[:, 0]).amax(dim=0).clamp_min(1e-12)
    return move / widest


def run(setup: Setup) -> Result:
    s, seeds = setup.settings, setup.seeds
    tick = setup.ticker(len(seeds) * (2 * len(INITS) + 2 * len(s["lrs"])))
    one_run = partial(_one_run, setup, tick)
    fig1 = _sigmoid_nets(setup, one_run)
    ladder = _ladder(setup, one_run)
    return setup.result(
        summary=(
            "The paper's MNIST net (3 x 100 sigmoid units, batch 60) on digits, with and "
            "without BN before each sigmoid; and the same net with ReLU units over a ladder of "
            "learning rates. BN reaches the target sooner, from any of three inits, and "
            "keeps the input distribution of the last sigmoid layer where it started."
        ),
        setting=(
            f"digits (standardized), MLP 64 -> 3 x 100 -> 10, BN before each nonlinearity, "
            f"plain SGD, batch {BATCH}; sigmoid net: lr {LR:g} (the paper's is not stated), "
            f"Xavier, small (0.01) or large (1.0) init, {s['budget']} steps; ReLU net: He "
            f"init, lr {', '.join(f'{v:g}' for v in s['lrs'])}, {s['lr_budget']} steps; target "
            f"{1 - TARGET_ERROR:.0%} validation accuracy, checked every {s['every']} steps; "
            f"percentiles on {PROBE_EXAMPLES} fixed training images; {len(seeds)} seeds, "
            f"median [min, max]"
        ),
        claims=claims(fig1["steps"], fig1["drift"], ladder, s["budget"]),
        data={
            "target": TARGET_ERROR,
            "budget": s["budget"],
            "curves": fig1["curves"],
            "percentiles": fig1["percentiles"],
            "steps": fig1["steps"],
            "ladder": ladder,
        },
    )


def _one_run(
    setup: Setup,
    tick: Callable[[str], None],
    bn: bool,
    init: str,
    act: str,
    lr: float,
    seed_: int,
    budget: int,
    stop: bool,
    callbacks=(),
) -> Run:
    train, val = digits(seed_)
    torch.manual_seed(seed_)
    model = mlp(64, HIDDEN, 10, act, init, batch_norm=bn).to(setup.device)
    every, device = setup.settings["every"], setup.device
    training = Training(
        budget, TARGET_ERROR, every, device=device, stop_at_target=stop, batch_size=BATCH
    )
    result = training.run(model, train, lr, seed_, eval_data=val, callbacks=callbacks)
    tick(f"{'BN' if bn else 'plain'}, {act}, {init} init, lr {lr:g}, seed {seed_}")
    return result


def _sigmoid_nets(setup: Setup, one_run) -> dict[str, dict]:
    """Fig. 1: the sigmoid net from Xavier init for the whole budget, tracking the last
    sigmoid's inputs; and the same net from the other inits, until it reaches the target."""
    s, seeds = setup.settings, setup.seeds
    out: dict[str, dict] = {"steps": {}, "curves": {}, "percentiles": {}, "drift": {}}
    for key, bn in NETS:
        layer = "bn3" if bn else "fc3"
        steps = out["steps"][key] = {}
        curves = out["curves"][key] = {"steps": [], "errors": []}
        drift = out["drift"][key] = []
        for init in INITS:
            steps[init] = []
            for seed_ in seeds:
                train, _ = digits(seed_)
                tracker = InputPercentiles(train[0][:PROBE_EXAMPLES], layer, s["every"])
                main = init == "xavier"
                callbacks = [tracker] if main else ()
                result = one_run(bn, init, "sigmoid", LR, seed_, s["budget"], not main, callbacks)
                steps[init].append(result.steps)
                if not main:
                    continue
                curves["steps"].append(result.error_steps)
                curves["errors"].append(result.errors)
                unit_drift = _drift(tracker.values)
                drift.append(float(unit_drift.median()))
                if seed_ == seeds[0]:
                    # the unit whose drift is the median one: a "typical" sigmoid
                    unit = int(unit_drift.argsort()[len(unit_drift) // 2])
                    out["percentiles"][key] = {
                        "steps": tracker.steps,
                        "values": [v[:, unit].tolist() for v in tracker.values],
                    }
    return out


def _ladder(setup: Setup, one_run) -> dict[str, dict[str, list[str]]]:
    """The learning-rate ladder, ReLU net, He init: per net and rate, each seed's outcome."""
    s, seeds = setup.settings, setup.seeds
    ladder: dict[str, dict[str, list]] = {"plain": {}, "bn": {}}
    for key, bn in NETS:
        for lr in s["lrs"]:
            runs = [one_run(bn, "he", "relu", lr, seed_, s["lr_budget"], True) for seed_ in seeds]
            ladder[key][f"{lr:g}"] = [
                "diverged" if r.diverged else ("trained" if r.steps is not None else "slow")
                for r in runs
            ]
    return ladder


def claims(
    steps: dict[str, dict[str, list]],
    drift: dict[str, list[float]],
    ladder: dict[str, dict[str, list[str]]],
    budget: int,
) -> list[Claim]:
    """Higher learning rates, fewer steps, less care for the init, stable inputs."""

    def largest_trained(key: str) -> float | None:
        ok = [float(lr) for lr, outcome in ladder[key].items() if set(outcome) == {"trained"}]
        return max(ok) if ok else None

    def worst_init(key: str):
        per_seed = zip(*(steps[key][init] for init in INITS), strict=True)
        return steps_spread([None if None in row else max(row) for row in per_seed])

    shown_at = [
        lr
        for lr in ladder["bn"]
        if set(ladder["bn"][lr]) == {"trained"} and set(ladder["plain"][lr]) == {"diverged"}
    ]
    plain_steps, bn_steps = (
        steps_spread(steps["plain"]["xavier"]),
        steps_spread(steps["bn"]["xavier"]),
    )
    plain_worst, bn_worst = worst_init("plain"), worst_init("bn")
    plain_drift, bn_drift = spread(drift["plain"]), spread(drift["bn"])
    never = f"(inf = not within {budget} steps)"
    return [
        Claim(
            text="With BN the network trains at a learning rate where the plain one diverges",
            source=SOURCE + ", Sec. 3.3 (Inception: higher learning rates)",
            expected="some rate in the ladder where BN reaches the target in every seed and "
            "the plain net diverges (NaN or loss > 3x initial) in every seed",
            measured=f"largest rate that trains in every seed: plain "
            f"{fmt(largest_trained('plain'))}, BN {fmt(largest_trained('bn'))}; "
            f"shown at lr {', '.join(shown_at) or 'none'}",
            passed=bool(shown_at),
            values={"plain": largest_trained("plain"), "bn": largest_trained("bn")},
        ),
        Claim(
            text=f"With BN the network reaches {1 - TARGET_ERROR:.0%} validation accuracy in "
            "fewer steps (same learning rate)",
            source=SOURCE + ", Fig. 1(a)",
            expected="BN's steps below the plain net's, ranges apart",
            measured=f"plain {fmt(plain_steps)}; BN {fmt(bn_steps)} {never}",
            **below({"plain": plain_steps, "bn": bn_steps}, lower="bn"),
        ),
        Claim(
            text="With BN the network is less sensitive to the init (small 0.01, Xavier, "
            "large 1.0)",
            source=SOURCE + ", Sec. 3.3 and abstract",
            expected="steps to the target under the slowest init: BN below plain, ranges apart",
            measured=f"slowest init: plain {fmt(plain_worst)}; BN {fmt(bn_worst)} {never}",
            **below({"plain": plain_worst, "bn": bn_worst}, lower="bn"),
        ),
        Claim(
            text="With BN the distribution of a hidden layer's input stays put during "
            "training; without BN it drifts",
            source=SOURCE + ", Fig. 1(b, c)",
            expected="median over units of the largest move of the median input, in units of "
            "its widest 15-85th percentile spread: BN below plain, ranges apart",
            measured=f"plain {fmt(plain_drift)}; BN {fmt(bn_drift)}",
            **below({"plain": plain_drift, "bn": bn_drift}, lower="bn"),
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


_NET_COLORS = {"plain": "#d62728", "bn": "#1f77b4"}
_NET_LABELS = {"plain": "plain", "bn": "with BN"}


def figures(data: dict) -> list[tuple[Figure, str]]:
    return [_fig1(data), _inits_and_ladder(data)]


def _fig1(data: dict) -> tuple[Figure, str]:
    """The paper's Fig. 1: validation error, and a sigmoid input's percentiles, plain and BN."""
    fig = new_figure(12, 3.9)
    ax_curve, ax_plain, ax_bn = fig.subplots(1, 3)
    for key in ("plain", "bn"):
        curve = data["curves"][key]
        ragged_band(
            ax_curve, curve["steps"], curve["errors"], _NET_LABELS[key], color=_NET_COLORS[key]
        )
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_curve.set_yscale("log")
    labelled(
        ax_curve, "sigmoid net, Xavier init, same lr", "SGD step", "validation error (log scale)"
    )
    low = min(min(min(v) for v in data["percentiles"][k]["values"]) for k in ("plain", "bn"))
    high = max(max(max(v) for v in data["percentiles"][k]["values"]) for k in ("plain", "bn"))
    margin = 0.05 * (high - low)
    for ax, key in ((ax_plain, "plain"), (ax_bn, "bn")):
        track = data["percentiles"][key]
        values = np.array(track["values"])
        for i, (name, style) in enumerate(
            zip(("15th", "50th", "85th"), (":", "-", ":"), strict=True)
        ):
            ax.plot(
                track["steps"],
                values[:, i],
                ls=style,
                color=_NET_COLORS[key],
                label=f"{name} percentile",
            )
        labelled(
            ax,
            f"input to a last-layer sigmoid, {_NET_LABELS[key]}",
            "SGD step",
            "value",
            ylim=(low - margin, high + margin),
        )
    grid(ax_curve, ax_plain, ax_bn)
    return (
        fig,
        "The paper's Fig. 1 on digits. Left: validation error (median over seeds, band: "
        "min..max). Middle and right: the 15th, 50th and 85th percentiles of one unit's "
        "input to the last sigmoid layer over training (the unit whose drift is the "
        "median one, first seed; same y axis): without BN the median wanders; with BN it "
        "stays, while the spread widens as BN's scale is learnt.",
    )


def _inits_and_ladder(data: dict) -> tuple[Figure, str]:
    """Steps to the target per init, and the ReLU net's outcome per learning rate."""
    fig2 = new_figure(11, 3.6)
    ax_init, ax_ladder = fig2.subplots(1, 2)
    steps = data["steps"]
    inits = list(steps["plain"])
    budget = data["budget"]
    width = 0.38
    for j, key in enumerate(("plain", "bn")):
        for i, init in enumerate(inits):
            values = [budget if v is None else v for v in steps[key][init]]
            never = any(v is None for v in steps[key][init])
            x = i + (j - 0.5) * width
            ax_init.bar(
                x,
                float(np.median(values)),
                width,
                color=_NET_COLORS[key],
                hatch="//" if never else None,
                edgecolor="black" if never else None,
                label=_NET_LABELS[key] if i == 0 else None,
            )
            ax_init.plot([x, x], [min(values), max(values)], color="black", lw=1.5)
            if all(v is None for v in steps[key][init]):
                ax_init.text(x, budget, "never", ha="center", va="bottom", fontsize=8)
    ax_init.set_xticks(range(len(inits)), [f"{i} init" for i in inits])
    ax_init.set(
        title=f"steps to {1 - data['target']:.0%} validation accuracy",
        ylabel=f"SGD steps (budget {budget})",
    )
    ax_init.legend(fontsize=8)
    ladder = data["ladder"]
    lrs = list(ladder["plain"])
    outcome_color = {"trained": "#2da44e", "slow": "#f2cc60", "diverged": "#cf222e"}
    for row, key in enumerate(("plain", "bn")):
        for col, lr in enumerate(lrs):
            outcomes = ladder[key][lr]
            main = max(set(outcomes), key=outcomes.count)
            ax_ladder.add_patch(_rectangle((col - 0.45, row - 0.4), 0.9, 0.8, outcome_color[main]))
            text = "\n".join(f"{outcomes.count(o)} {o}" for o in outcome_color if o in outcomes)
            ax_ladder.text(col, row, text, ha="center", va="center", fontsize=8, color="white")
    ax_ladder.set_xlim(-0.5, len(lrs) - 0.5)
    ax_ladder.set_ylim(-0.5, 1.5)
    ax_ladder.set_xticks(range(len(lrs)), [f"lr {lr}" for lr in lrs])
    ax_ladder.set_yticks([0, 1], ["plain", "with BN"])
    ax_ladder.set_title("ReLU net: outcome per learning rate (seeds)")
    ax_init.grid(alpha=0.3, axis="y")
    return (
        fig2,
        "Left: steps to the target from three inits (bar: median, line: min..max, hatched: "
        "not reached in the budget by some seed). Right: the same net with ReLU units "
        "over a ladder of learning rates; diverged = NaN or loss > 3x the initial loss.",
    )


def _rectangle(xy, width: float, height: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, color=color)
