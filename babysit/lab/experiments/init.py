"""init: the lecture's own experiment. Ten layers of 500 units fed unit-Gaussian data, tanh
and ReLU, under small (0.01), large (1.0), Xavier and He init: how the activations' scale
and distribution change with depth.

CS231n Lecture 6 shows it as curves and histograms only; Glorot & Bengio (AISTATS 2010) and
He et al. (ICCV 2015) give the variance arguments. The experiment is synthetic and exact at
any scale: the figures below do not depend on a data set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from babysit.lab.base import Claim, Result, Setup, Spread, fmt, spread
from babysit.lab.drawing import INIT_COLORS, finite, layer_numbers, new_figure
from babysit.nn import mlp
from babysit.probes import activation_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Weight init: activations through 10 layers"
ORDER = 1

SOURCE = "CS231n Lecture 6 (activation statistics at init)"
ACTIVATIONS = ("tanh", "relu")
INITS = ("small", "large", "xavier", "he")

# The lecture's setting: D = randn(1000, 500), 10 hidden layers of 500 units.
SETTINGS = {
    "tiny": {"examples": 200, "width": 200, "layers": 10, "seeds": 1},
    "small": {"examples": 1000, "width": 500, "layers": 10, "seeds": 3},
    "full": {"examples": 1000, "width": 500, "layers": 10, "seeds": 10},
}

# "Collapse to zero": the last layer's std is below 1e-3 of the first's. The lecture's plot
# shows ~1e-6 for 0.01 init (each layer multiplies the std by ~0.01 * sqrt(500) ~ 0.22); three
# orders of magnitude leave no doubt that the signal is gone.
COLLAPSE_RATIO = 1e-3
# "Well scaled": the last layer keeps at least a tenth of the first layer's std, i.e. it
# loses at most one order of magnitude over the depth. Xavier-tanh keeps ~0.36 in the lecture's
# numbers (0.63 -> 0.23); Xavier-ReLU halves the variance per layer, 2^(-9/2) ~ 0.044 over
# nine layers (He et al. 2015, eq. 10), which is "collapsing" by this line.
WELL_SCALED_RATIO = 0.1
# "Saturated at +-1": more than 80% of the tanh outputs at every layer sit where tanh's
# derivative is < 5% of its peak (|y| > 0.975, see babysit.nn.activations). With N(0, 1)
# weights the pre-activations have std ~sqrt(500) ~ 22, so ~92% are expected there.
SATURATED_FRACTION = 0.8


def run(setup: Setup) -> Result:
    s, seeds = setup.settings, setup.seeds
    runs, histograms = _measure(setup)
    curves = {
        key: {
            name: [spread(column).median for column in zip(*per_seed, strict=True)]
            for name, per_seed in run_.items()
        }
        for key, run_ in runs.items()
    }
    return setup.result(
        summary=(
            "The lecture's experiment: unit-Gaussian data through 10 layers of 500 units. "
            "With 0.01 init the activations shrink ~4x per layer to zero; with 1.0 tanh units "
            "pile up at +-1; Xavier keeps tanh's scale but halves ReLU's variance per layer; "
            "He's factor 2 keeps ReLU's scale."
        ),
        setting=(
            f"{s['layers']} hidden layers of {s['width']} units, input {s['examples']} x "
            f"{s['width']} ~ N(0, 1), biases 0; Xavier = N(0, 1/fan_in) (the lecture's), "
            f"He = N(0, gain^2/fan_in) with the activation's gain (sqrt 2 for ReLU, 5/3 for "
            f"tanh); {len(seeds)} seeds, figures are median [min, max]"
        ),
        claims=claims(runs, s["layers"]),
        data={"layers": s["layers"], "curves": curves, "histograms": histograms},
    )


def _measure(setup: Setup) -> tuple[dict[str, dict[str, list]], dict[str, dict]]:
    """Per (activation, init): per seed, per layer, the std, mean, saturated fraction and
    gradient std of the outputs at init; and the first seed's histograms."""
    s, seeds, device = setup.settings, setup.seeds, setup.device
    tick = setup.ticker(len(seeds) * len(ACTIVATIONS) * len(INITS))
    runs: dict[str, dict[str, list]] = {}
    histograms: dict[str, dict] = {}
    for seed_ in seeds:
        generator = torch.Generator().manual_seed(seed_)
        x = torch.randn(s["examples"], s["width"], generator=generator).to(device)
        y = torch.randint(0, 10, (s["examples"],), generator=generator).to(device)
        for act in ACTIVATIONS:
            for init in INITS:
                torch.manual_seed(seed_)
                model = mlp(s["width"], [s["width"]] * s["layers"], 10, act, init).to(device)
                stats = [st for st in activation_stats(model, x, y) if st.activation == act]
                key = f"{act}/{init}"
                run_ = runs.setdefault(key, {"std": [], "mean": [], "saturated": [], "grad": []})
                run_["std"].append([st.std for st in stats])
                run_["mean"].append([st.mean for st in stats])
                run_["saturated"].append([st.saturated_fraction or 0.0 for st in stats])
                run_["grad"].append([st.grad_std for st in stats])
                if seed_ == seeds[0]:
                    histograms[key] = {
                        "counts": [st.histogram for st in stats],
                        "ranges": [list(st.histogram_range) for st in stats],
                    }
                tick(f"{act}, {init} init")
    return runs, histograms


def claims(runs: dict[str, dict[str, list]], depth: int) -> list[Claim]:
    """The five claims, from the per-seed, per-layer statistics."""

    def ratio(key: str) -> Spread:
        return spread([std[-1] / std[0] for std in runs[key]["std"]])

    ratio_text = f"std(layer {depth}) / std(layer 1)"
    small_tanh, small_relu = ratio("tanh/small"), ratio("relu/small")
    large = spread([min(sat) for sat in runs["tanh/large"]["saturated"]])
    xavier_tanh, xavier_relu, he_relu = ratio("tanh/xavier"), ratio("relu/xavier"), ratio("relu/he")
    return [
        Claim(
            text="Small init (0.01): activations collapse to zero with depth (tanh and ReLU)",
            source=SOURCE,
            expected=f"{ratio_text} < {COLLAPSE_RATIO:g}",
            measured=f"tanh {fmt(small_tanh)}; ReLU {fmt(small_relu)}",
            passed=max(small_tanh.high, small_relu.high) < COLLAPSE_RATIO,
            values={"tanh": small_tanh.median, "relu": small_relu.median},
        ),
        Claim(
            text="Large init (1.0): tanh units saturate at -1 and +1",
            source=SOURCE,
            expected=f"saturated fraction > {SATURATED_FRACTION:.0%} at every layer",
            measured=f"lowest layer's saturated fraction {fmt(large)}",
            passed=large.low > SATURATED_FRACTION,
            values={"min_saturated_fraction": large.median},
        ),
        Claim(
            text="Xavier init keeps tanh activations well scaled through depth",
            source=SOURCE + "; Glorot & Bengio, AISTATS 2010",
            expected=f"{ratio_text} >= {WELL_SCALED_RATIO:g}",
            measured=fmt(xavier_tanh),
            passed=xavier_tanh.low >= WELL_SCALED_RATIO,
            values={"ratio": xavier_tanh.median},
        ),
        Claim(
            text="Xavier init collapses under ReLU: the variance halves at every layer",
            source=SOURCE + "; He et al., ICCV 2015, eq. 10",
            expected=f"{ratio_text} < {WELL_SCALED_RATIO:g}",
            measured=f"{fmt(xavier_relu)} (theory 2^(-{depth - 1}/2) = "
            f"{fmt(2 ** (-(depth - 1) / 2))})",
            passed=xavier_relu.high < WELL_SCALED_RATIO,
            values={"ratio": xavier_relu.median},
        ),
        Claim(
            text="He init keeps ReLU activations well scaled through depth",
            source=SOURCE + "; He et al., ICCV 2015",
            expected=f"{WELL_SCALED_RATIO:g} <= {ratio_text} <= {1 / WELL_SCALED_RATIO:g}",
            measured=fmt(he_relu),
            passed=he_relu.low >= WELL_SCALED_RATIO and he_relu.high <= 1 / WELL_SCALED_RATIO,
            values={"ratio": he_relu.median},
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


def figures(data: dict) -> list[tuple[Figure, str]]:
    n = data["layers"]
    x = layer_numbers(n)
    curves = data["curves"]
    fig = new_figure(11, 3.6)
    axes = fig.subplots(1, 3)
    for key, curve in curves.items():
        act, init = key.split("/")
        style = {"color": INIT_COLORS[init], "ls": "-" if act == "tanh" else "--", "marker": "o"}
        label = f"{act}, {init}"
        axes[0].plot(x, finite([abs(m) for m in curve["mean"]]), label=label, ms=3, **style)
        axes[1].plot(x, finite(curve["std"]), label=label, ms=3, **style)
        axes[2].plot(x, finite(curve["grad"]), label=label, ms=3, **style)
    axes[0].set(title="|mean| of each layer's output", xlabel="layer", ylabel="|mean| (log scale)")
    axes[0].set_yscale("log")
    axes[1].set(title="std of each layer's output", xlabel="layer", ylabel="std (log scale)")
    axes[1].set_yscale("log")
    axes[2].set(title="std of the gradient at each layer", xlabel="layer", ylabel="std (log scale)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="lower left")
    out = [
        (
            fig,
            "Per-layer |mean| and std of the activations, and std of the back-propagated "
            "gradient, at init (solid: tanh, dashed: ReLU; tanh's means are ~0, noise). Small "
            "init collapses to zero; Xavier keeps tanh's scale but loses ReLU's by 2x in "
            "variance per layer; He keeps ReLU's; large init explodes ReLU and saturates tanh.",
        )
    ]
    for act in ("tanh", "relu"):
        out.append((_init_histograms(data, act), _HISTOGRAM_CAPTIONS[act]))
    return out


_HISTOGRAM_CAPTIONS = {
    "tanh": "tanh: histogram of each layer's outputs (columns: layers 1..10). 0.01 init: "
    "the spike at zero narrows layer after layer (note the x-axis range); 1.0 init: the mass "
    "piles up at -1 and +1; Xavier and He: spread over (-1, 1) at every layer.",
    "relu": "ReLU: histogram of each layer's outputs, zeros excluded (about half are 0). The "
    "shape is the same everywhere (scaling a ReLU net's weights only rescales its outputs); "
    "read the scale off the std and the x-axis range: it shrinks ~6x per layer to ~0 with "
    "0.01 init, grows ~15x per layer with 1.0, shrinks ~1.4x per layer with Xavier and stays "
    "put with He.",
}


def _init_histograms(data: dict, act: str) -> Figure:
    n = data["layers"]
    inits = [k.split("/")[1] for k in data["histograms"] if k.startswith(act + "/")]
    fig = new_figure(12, 1.45 * len(inits) + 0.6)
    axes = fig.subplots(len(inits), n, squeeze=False)
    for row, init in enumerate(inits):
        h = data["histograms"][f"{act}/{init}"]
        for col in range(n):
            ax = axes[row][col]
            counts = np.array(h["counts"][col], dtype=float)
            low, high = h["ranges"][col]
            edges = np.linspace(low, high, len(counts) + 1)
            if act == "relu":  # the zeros are half the mass and hide the rest
                counts[0] = 0.0 if low >= 0 else counts[0]
            ax.stairs(counts, edges, fill=True, color=INIT_COLORS[init], alpha=0.85)
            std = data["curves"][f"{act}/{init}"]["std"][col]
            ax.text(
                0.97,
                0.95,
                f"std {std:.2g}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=6.5,
            )
            ax.set_yticks([])
            ax.set_xticks([low, high])
            ax.tick_params(axis="x", labelsize=6)
            ax.xaxis.set_major_formatter(_short_formatter())
            if row == 0:
                ax.set_title(f"layer {col + 1}", fontsize=8)
            if col == 0:
                ax.set_ylabel(init, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(f"{act}: distribution of each layer's outputs at init", fontsize=10)
    return fig


def _short_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:.2g}")
