"""search: random vs grid search under the same budget when one hyperparameter matters much
more than the other (Bergstra & Bengio, JMLR 2012, Fig. 1), and coarse-to-fine narrowing
(CS231n notes, "Neural Networks Part 3").

(a) B&B's own picture, exactly: f(x, y) = g(x) + h(y) with h much weaker than g, 9 trials, a
3x3 grid against 9 random points, over many random placements of the optima. (b) The same
on digits: best of 9 trainings, learning rate (important) and weight decay (not, over one
epoch), with Optuna's GridSampler and RandomSampler. (c) `babysit.search`'s coarse-to-fine
stages: a wide first stage, then a stage in the range narrowed around its best trials.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
import torch

from babysit.lab.base import Claim, Result, Setup, digits, fmt, seeds_for, spread
from babysit.lab.drawing import grid, labelled, new_figure
from babysit.nn import mlp
from babysit.train import evaluate, fit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Random vs grid search, and coarse-to-fine"
ORDER = 7
SOURCE = "Bergstra & Bengio, JMLR 2012, Fig. 1"

SETTINGS = {
    "tiny": {"placements": 2000, "repeats": 1, "epochs": 1, "stage_trials": (3, 2), "studies": 1},
    "small": {
        "placements": 10_000,
        "repeats": 8,
        "epochs": 1,
        "stage_trials": (16, 8),
        "studies": 3,
    },
    "full": {
        "placements": 100_000,
        "repeats": 30,
        "epochs": 1,
        "stage_trials": (40, 12),
        "studies": 10,
    },
}
TRIALS = 9  # B&B's Fig. 1: a 3x3 grid against 9 random trials
# (a) h's weight against g's: "f(x, y) = g(x) + h(y) ~ g(x)" in B&B; a tenth is our choice.
WEAK_WEIGHT = 0.1
# (b) The ranges: the notes' log-uniform learning rate, narrowed to where SGD on digits does
# anything in one epoch; weight decay over a range where one epoch cannot feel it.
LR_RANGE = (1e-4, 1.0)
WEIGHT_DECAY_RANGE = (1e-6, 1e-3)
# (c) The coarse stage's range, as in the notes: lr = 10 ** uniform(-6, 1).
COARSE_LR_RANGE = (1e-6, 10.0)
HIDDEN = [100]


def _grid_axis(low: float, high: float, n: int = 3, log: bool = False) -> list[float]:
    """n values at the centres of n equal cells of [low, high] (on a log axis if `log`): the
    best a grid can do for an optimum placed uniformly at random."""
    a, b = (math.log10(low), math.log10(high)) if log else (low, high)
    points = [a + (b - a) * (i + 0.5) / n for i in range(n)]
    return [10**p for p in points] if log else points


def _synthetic(placements: int, seed: int) -> dict:
    """B&B Fig. 1 as a Monte Carlo: g(x) = -(x - x*)^2, h(y) = -WEAK_WEIGHT (y - y*)^2 on
    [0, 1]^2, optima uniform; the trial with the best f is kept, and we record how far its x
    is from x*."""
    rng = np.random.default_rng(seed)
    x_opt, y_opt = rng.random((2, placements, 1))
    axis = np.array(_grid_axis(0.0, 1.0))
    grid_x, grid_y = (a.ravel()[None, :] for a in np.meshgrid(axis, axis))
    random_x, random_y = rng.random((2, placements, TRIALS))

    def distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        f = -((x - x_opt) ** 2) - WEAK_WEIGHT * (y - y_opt) ** 2
        best = np.argmax(f, axis=1)
        return np.abs(np.take_along_axis(x, best[:, None], axis=1)[:, 0] - x_opt[:, 0])

    grid = distance(
        np.broadcast_to(grid_x, random_x.shape), np.broadcast_to(grid_y, random_y.shape)
    )
    random = distance(random_x, random_y)
    return {
        "grid": grid,
        "random": random,
        "distinct_x": {"grid": len(set(axis.tolist())), "random": TRIALS},
    }


@contextmanager
def _quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _train(lr: float, weight_decay: float, epochs: int, seed: int, device, callbacks=()) -> float:
    """Validation accuracy of the lecture's small net after `epochs` of SGD momentum."""
    train, val = digits(seed)
    torch.manual_seed(seed)
    model = mlp(64, HIDDEN, 10, "relu", "he")
    history = fit(
        model,
        train,
        epochs=epochs,
        lr=lr,
        optimizer="momentum",
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        callbacks=callbacks,
    )
    if history.stopped:
        return 0.0  # diverged: the 3x loss rule stopped it
    return evaluate(model, val, device=torch.device(device))["accuracy"]


def _best_of_nine(sampler: optuna.samplers.BaseSampler, epochs: int, seed: int, device) -> dict:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        weight_decay = trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True)
        return _train(lr, weight_decay, epochs, seed, device)

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=TRIALS)
    return {
        "best": study.best_value,
        "best_lr": study.best_params["lr"],
        "lrs": [t.params["lr"] for t in study.trials],
        "values": [t.value for t in study.trials],
    }


def _coarse_to_fine(stage_trials: tuple[int, int], epochs: int, seed: int, device) -> dict:
    from babysit.search import Stage, search
    from babysit.train import LossAbort

    def objective(trial) -> float:
        lr = trial.params["lr"]
        return _train(lr, 0.0, trial.epochs, seed, device, callbacks=[LossAbort()])

    stages = [Stage(stage_trials[0], epochs=epochs), Stage(stage_trials[1], epochs=epochs)]
    with tempfile.TemporaryDirectory(prefix="babysit-lab-") as folder:
        storage = f"sqlite:///{Path(folder) / 'study.db'}"
        result = search(objective, {"lr": COARSE_LR_RANGE}, stages, storage=storage, seed=seed)
        out = []
        for summary in result.stages:
            trials = [
                t
                for t in result.trials
                if t.user_attrs.get("stage") == summary.index and t.value is not None
            ]
            param = summary.space["lr"]
            out.append(
                {
                    "range": [param.low, param.high],
                    "lrs": [t.params["lr"] for t in trials],
                    "values": [t.value for t in trials],
                    "warnings": [f"{w.param} {w.side}" for w in summary.warnings],
                }
            )
    return {"stages": out}


def run(setup: Setup) -> Result:
    s, device = setup.settings, setup.device
    repeats = seeds_for(setup.seed, s["repeats"])
    studies = seeds_for(setup.seed, s["studies"])
    tick = setup.ticker(1 + 2 * len(repeats) + len(studies))

    synthetic = _synthetic(s["placements"], setup.seed)
    tick("synthetic g(x) + h(y)")
    grid_values = {
        "lr": _grid_axis(*LR_RANGE, log=True),
        "weight_decay": _grid_axis(*WEIGHT_DECAY_RANGE, log=True),
    }
    digits_runs: dict[str, list] = {"grid": [], "random": []}
    with _quiet_optuna():
        for r in repeats:
            digits_runs["grid"].append(
                _best_of_nine(
                    optuna.samplers.GridSampler(grid_values, seed=r), s["epochs"], r, device
                )
            )
            tick(f"grid search, repeat {r}")
            digits_runs["random"].append(
                _best_of_nine(optuna.samplers.RandomSampler(seed=r), s["epochs"], r, device)
            )
            tick(f"random search, repeat {r}")
        staged = []
        for study_seed in studies:
            staged.append(_coarse_to_fine(s["stage_trials"], s["epochs"], study_seed, device))
            tick(f"coarse-to-fine, seed {study_seed}")

    grid_distance, random_distance = synthetic["grid"], synthetic["random"]
    return setup.result(
        summary=(
            "A 3x3 grid tries only 3 values of each parameter; 9 random trials try 9 of each. "
            "When one parameter matters and the other barely does, random search therefore "
            "gets closer to the important one's optimum. Coarse-to-fine search then spends "
            "its later trials where the first ones did well."
        ),
        setting=(
            f"(a) f = -(x - x*)^2 - {WEAK_WEIGHT:g} (y - y*)^2 on [0, 1]^2, grid at cell "
            f"centres (1/6, 1/2, 5/6), {s['placements']} random placements of (x*, y*); (b) "
            f"digits (standardized), MLP 64 -> {HIDDEN[0]} ReLU -> 10, SGD momentum 0.9, "
            f"{s['epochs']} epoch per trial, lr in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}] and weight "
            f"decay in [{WEIGHT_DECAY_RANGE[0]:g}, {WEIGHT_DECAY_RANGE[1]:g}], both log scale, "
            f"grid at log cell centres, {len(repeats)} repeats (seed = data split, init, "
            f"random sampler); (c) babysit.search, lr = 10^uniform(-6, 1), "
            f"{s['stage_trials'][0]} then {s['stage_trials'][1]} trials of {s['epochs']} "
            f"epoch, {len(studies)} studies"
        ),
        claims=claims(synthetic, digits_runs, staged, s["placements"]),
        data={
            "synthetic": {
                "grid": np.sort(grid_distance).tolist()[:: max(1, len(grid_distance) // 500)],
                "random": np.sort(random_distance).tolist()[:: max(1, len(random_distance) // 500)],
            },
            "digits": digits_runs,
            "staged": staged,
            "grid_values": grid_values,
        },
        seeds=repeats,
    )


def claims(
    synthetic: dict, digits_runs: dict[str, list], staged: list[dict], placements: int
) -> list[Claim]:
    """Random beats grid on the synthetic f and (claimed) on digits; fine beats coarse."""
    grid_distance, random_distance = synthetic["grid"], synthetic["random"]
    random_closer = float(np.mean(random_distance < grid_distance))
    grid_best = spread([run_["best"] for run_ in digits_runs["grid"]])
    random_best = spread([run_["best"] for run_ in digits_runs["random"]])
    pairs = list(zip(digits_runs["random"], digits_runs["grid"], strict=True))
    wins = sum(r["best"] > g["best"] for r, g in pairs)
    ties = sum(r["best"] == g["best"] for r, g in pairs)
    coarse_median = [float(np.median(st["stages"][0]["values"])) for st in staged]
    fine_median = [float(np.median(st["stages"][1]["values"])) for st in staged]
    narrowed = [
        math.log10(st["stages"][1]["range"][1] / st["stages"][1]["range"][0]) for st in staged
    ]
    edge_warnings = sum(bool(st["stages"][1]["warnings"]) for st in staged)
    return [
        Claim(
            text="With 9 trials and one parameter far more important than the other, random "
            "search lands closer to the important parameter's optimum than a 3x3 grid",
            source=SOURCE,
            expected="random closer than grid in more than half of the placements, and a "
            "smaller median distance",
            measured=f"median |x - x*|: random {fmt(float(np.median(random_distance)))}, grid "
            f"{fmt(float(np.median(grid_distance)))}; random closer in {random_closer:.0%} of "
            f"{placements} placements; distinct x values tried: random 9, grid 3",
            passed=random_closer > 0.5 and np.median(random_distance) < np.median(grid_distance),
            values={"random_closer": random_closer},
        ),
        Claim(
            text="On digits, random search's best of 9 trainings beats the 3x3 grid's "
            "(learning rate important, weight decay not)",
            source=SOURCE + "; Fig. 2 for neural nets",
            expected="random's best validation accuracy above grid's in more than half the "
            "repeats, and medians apart by more than the grid's spread",
            measured=f"best val accuracy: random {fmt(random_best)}, grid {fmt(grid_best)}; "
            f"random better in {wins}/{len(pairs)} repeats ({ties} ties)",
            passed=wins > len(pairs) / 2
            and random_best.median - grid_best.median > grid_best.high - grid_best.low,
            exception=(
                "the grid's learning rates (4.6e-4, 1e-2, 0.22 on a log scale) include one "
                "on digits' wide plateau of good rates, so the grid lands on it in every "
                "repeat while 9 random rates now and then all miss it; the difference is "
                "inside the spread. B&B's advantage "
                "shows when the good region of the important parameter is narrow compared "
                "with the grid's spacing, as in the synthetic case above, or with more "
                "hyperparameters (their Fig. 2: 7)."
            ),
            values={"wins": wins, "random": random_best.median, "grid": grid_best.median},
        ),
        Claim(
            text="Coarse to fine: the stage sampled in the range narrowed around the coarse "
            "stage's best trials gets better trials (same budget per trial)",
            source="CS231n notes, Neural Networks Part 3 (hyperparameter optimization)",
            expected="median validation accuracy of the fine stage's trials above the coarse "
            "stage's, in every study",
            measured=f"coarse {fmt(spread(coarse_median))}, fine {fmt(spread(fine_median))}; "
            f"lr range narrowed from 7 decades to {fmt(spread(narrowed))}; best value on the "
            f"border of the fine range in {edge_warnings}/{len(staged)} studies",
            passed=all(f > c for f, c in zip(fine_median, coarse_median, strict=True)),
            values={"coarse": spread(coarse_median).median, "fine": spread(fine_median).median},
        ),
    ]


# --- figures ---------------------------------------------------------------------------------


def figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_points, ax_cdf, ax_digits = fig.subplots(1, 3)
    axis = [1 / 6, 1 / 2, 5 / 6]
    gx, gy = np.meshgrid(axis, axis)
    rng = np.random.default_rng(0)
    rx, ry = rng.random((2, 9))
    ax_points.scatter(gx.ravel(), gy.ravel(), marker="s", s=40, color="#d62728", label="grid")
    ax_points.scatter(rx, ry, marker="o", s=40, color="#1f77b4", label="random")
    ax_points.axhline(0, color="black", lw=0.8)
    ax_points.vlines(axis, -0.08, -0.02, color="#d62728", lw=2)
    ax_points.vlines(rx, -0.16, -0.10, color="#1f77b4", lw=2)
    ax_points.set(
        title="9 trials: 3 vs 9 distinct values of x",
        xlabel="x (important)",
        ylabel="y (unimportant)",
        xlim=(0, 1),
        ylim=(-0.18, 1),
    )
    ax_points.legend(fontsize=8, loc="upper right")
    for key, color in (("grid", "#d62728"), ("random", "#1f77b4")):
        values = np.array(data["synthetic"][key])
        ax_cdf.plot(values, np.linspace(0, 1, len(values)), color=color, label=key)
    labelled(
        ax_cdf, "distance of the best trial's x to x*", "|x - x*|", "fraction of placements (CDF)"
    )
    for key, color, marker in (("grid", "#d62728", "s"), ("random", "#1f77b4", "o")):
        lrs = [lr for run_ in data["digits"][key] for lr in run_["lrs"]]
        values = [v for run_ in data["digits"][key] for v in run_["values"]]
        ax_digits.scatter(
            lrs, values, s=12, alpha=0.5, color=color, marker=marker, label=f"{key} trials"
        )
    ax_digits.set_xscale("log")
    labelled(
        ax_digits,
        "digits: every trial, all repeats",
        "learning rate (log scale)",
        "validation accuracy",
    )
    grid(ax_points, ax_cdf, ax_digits)
    out = [
        (
            fig,
            "Left: one 3x3 grid and one draw of 9 random trials; the ticks at the bottom are "
            "the x values each tries. Middle: over many random optima, how close the best "
            "trial's x gets to x* (further left is better). Right: validation accuracy against "
            "learning rate for every digits trial: a wide plateau of good rates.",
        )
    ]
    staged = data["staged"]
    if staged:
        fig2 = new_figure(7, 3.6)
        ax = fig2.subplots(1, 1)
        study = staged[0]["stages"]
        low, high = study[1]["range"]
        ax.axvspan(low, high, color="#2da44e", alpha=0.12, label="fine stage's range")
        for index, (stage, color) in enumerate(zip(study, ("#7f7f7f", "#2da44e"), strict=False)):
            ax.scatter(
                stage["lrs"],
                stage["values"],
                s=22,
                color=color,
                label=f"stage {index + 1} ({len(stage['lrs'])} trials)",
            )
        ax.set_xscale("log")
        labelled(
            ax, "coarse to fine (first study)", "learning rate (log scale)", "validation accuracy"
        )
        ax.grid(alpha=0.3)
        out.append(
            (
                fig2,
                "babysit.search: the coarse stage samples lr = 10^uniform(-6, 1); the second "
                "samples the range narrowed around the coarse stage's best trials (shaded).",
            )
        )
    return out
