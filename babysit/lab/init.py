"""init: the lecture's own experiment. Ten layers of 500 units fed unit-Gaussian data, tanh
and ReLU, under small (0.01), large (1.0), Xavier and He init: how the activations' scale
and distribution change with depth.

CS231n Lecture 6 shows it as curves and histograms only; Glorot & Bengio (AISTATS 2010) and
He et al. (ICCV 2015) give the variance arguments. The experiment is synthetic and exact at
any scale: the figures below do not depend on a data set.
"""

from __future__ import annotations

import torch

from babysit.lab.base import Claim, Progress, Result, Spread, Ticker, fmt, seeds_for, spread
from babysit.nn import mlp
from babysit.probes import activation_stats

NAME = "init"
TITLE = "Weight init: activations through 10 layers"

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


def run(
    scale: str = "small",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Result:
    s = SETTINGS[scale]
    seeds = seeds_for(seed, s["seeds"])
    tick = Ticker(len(seeds) * len(ACTIVATIONS) * len(INITS), progress)
    # per (activation, init): per seed, per layer: std, mean, saturated fraction, grad std
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
                layers = [st for st in activation_stats(model, x, y) if st.activation == act]
                key = f"{act}/{init}"
                run_ = runs.setdefault(key, {"std": [], "mean": [], "saturated": [], "grad": []})
                run_["std"].append([st.std for st in layers])
                run_["mean"].append([st.mean for st in layers])
                run_["saturated"].append([st.saturated_fraction or 0.0 for st in layers])
                run_["grad"].append([st.grad_std for st in layers])
                if seed_ == seeds[0]:
                    histograms[key] = {
                        "counts": [st.histogram for st in layers],
                        "ranges": [list(st.histogram_range) for st in layers],
                    }
                tick(f"{act}, {init} init")

    def ratio(key: str) -> Spread:
        return spread([std[-1] / std[0] for std in runs[key]["std"]])

    def min_saturation(key: str) -> Spread:
        return spread([min(sat) for sat in runs[key]["saturated"]])

    depth = s["layers"]
    ratio_text = f"std(layer {depth}) / std(layer 1)"
    claims = []
    small_tanh, small_relu = ratio("tanh/small"), ratio("relu/small")
    claims.append(
        Claim(
            text="Small init (0.01): activations collapse to zero with depth (tanh and ReLU)",
            source=SOURCE,
            expected=f"{ratio_text} < {COLLAPSE_RATIO:g}",
            measured=f"tanh {fmt(small_tanh)}; ReLU {fmt(small_relu)}",
            passed=max(small_tanh.high, small_relu.high) < COLLAPSE_RATIO,
            values={"tanh": small_tanh.median, "relu": small_relu.median},
        )
    )
    large = min_saturation("tanh/large")
    claims.append(
        Claim(
            text="Large init (1.0): tanh units saturate at -1 and +1",
            source=SOURCE,
            expected=f"saturated fraction > {SATURATED_FRACTION:.0%} at every layer",
            measured=f"lowest layer's saturated fraction {fmt(large)}",
            passed=large.low > SATURATED_FRACTION,
            values={"min_saturated_fraction": large.median},
        )
    )
    xavier_tanh, xavier_relu = ratio("tanh/xavier"), ratio("relu/xavier")
    claims.append(
        Claim(
            text="Xavier init keeps tanh activations well scaled through depth",
            source=SOURCE + "; Glorot & Bengio, AISTATS 2010",
            expected=f"{ratio_text} >= {WELL_SCALED_RATIO:g}",
            measured=fmt(xavier_tanh),
            passed=xavier_tanh.low >= WELL_SCALED_RATIO,
            values={"ratio": xavier_tanh.median},
        )
    )
    claims.append(
        Claim(
            text="Xavier init collapses under ReLU: the variance halves at every layer",
            source=SOURCE + "; He et al., ICCV 2015, eq. 10",
            expected=f"{ratio_text} < {WELL_SCALED_RATIO:g}",
            measured=f"{fmt(xavier_relu)} (theory 2^(-{depth - 1}/2) = "
            f"{fmt(2 ** (-(depth - 1) / 2))})",
            passed=xavier_relu.high < WELL_SCALED_RATIO,
            values={"ratio": xavier_relu.median},
        )
    )
    he_relu = ratio("relu/he")
    claims.append(
        Claim(
            text="He init keeps ReLU activations well scaled through depth",
            source=SOURCE + "; He et al., ICCV 2015",
            expected=f"{WELL_SCALED_RATIO:g} <= {ratio_text} <= {1 / WELL_SCALED_RATIO:g}",
            measured=fmt(he_relu),
            passed=he_relu.low >= WELL_SCALED_RATIO and he_relu.high <= 1 / WELL_SCALED_RATIO,
            values={"ratio": he_relu.median},
        )
    )

    data = {
        "layers": depth,
        "curves": {
            key: {
                name: [spread(column).median for column in zip(*per_seed, strict=True)]
                for name, per_seed in run_.items()
            }
            for key, run_ in runs.items()
        },
        "histograms": histograms,
    }
    return Result(
        name=NAME,
        title=TITLE,
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
        scale=scale,
        seeds=seeds,
        claims=claims,
        data=data,
    )
