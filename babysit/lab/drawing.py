"""Drawing helpers the experiments' figures share: a median line with its min..max band over
seeds, bars of steps to a target, and the training-error race of arms tuned apart.

Plain functions on matplotlib Axes; matplotlib itself is imported only when a figure is made,
so that running an experiment never loads it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "INIT_COLORS",
    "band",
    "error_race",
    "finite",
    "layer_numbers",
    "new_figure",
    "ragged_band",
    "steps_bars",
]


def new_figure(width: float, height: float) -> Figure:
    """A blank matplotlib Figure of that size in inches (`babysit.report.html.new_figure`)."""
    from babysit.report.html import new_figure as figure

    return figure(width, height)


INIT_COLORS = {
    "small": "#1f77b4",
    "large": "#d62728",
    "xavier": "#2ca02c",
    "he": "#9467bd",
    "orthogonal": "#ff7f0e",
    "lsuv": "#17becf",
}


def layer_numbers(n: int) -> np.ndarray:
    """1..n, the x axis of a per-layer plot."""
    return np.arange(1, n + 1)


def band(ax, x, per_seed: Sequence[Sequence[float]], label: str, color=None, **kw) -> None:
    """Median over seeds as a line, min..max as a shaded band."""
    values = np.array(per_seed, dtype=float)
    if values.ndim == 1:
        values = values[None]
    line = ax.plot(x, np.median(values, axis=0), label=label, color=color, **kw)[0]
    if len(values) > 1:
        ax.fill_between(
            x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.18, lw=0
        )


def ragged_band(ax, steps_per_seed, per_seed, label: str, color=None, **kw) -> None:
    """Like band for curves of different lengths (runs that stopped early): NaN-padded."""
    longest = max(steps_per_seed, key=len)
    values = np.full((len(per_seed), len(longest)), np.nan)
    for i, curve in enumerate(per_seed):
        values[i, : len(curve)] = finite(curve)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    line = ax.plot(longest, median, label=label, color=color, **kw)[0]
    if len(per_seed) > 1:
        ax.fill_between(longest, low, high, color=line.get_color(), alpha=0.18, lw=0)


def steps_bars(ax, names, steps_lists, budget: int, colors) -> None:
    """Median steps to a target per run kind (bar), min..max (line); runs that never reached
    it count as the budget and their bar is hatched and labelled "never"."""
    for i, (steps, color) in enumerate(zip(steps_lists, colors, strict=True)):
        values = [budget if v is None else v for v in steps]
        never = any(v is None for v in steps)
        median = float(np.median(values))
        ax.bar(
            i,
            median,
            color=color,
            hatch="//" if never else None,
            edgecolor="black" if never else None,
        )
        ax.plot([i, i], [min(values), max(values)], color="black", lw=1.5)
        label = "never" if all(v is None for v in steps) else f"{median:g}"
        ax.text(i, max(values), label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"SGD steps (budget {budget})")


def finite(values: Sequence[float]) -> list[float]:
    """The values with None, inf and -inf as NaN, which matplotlib leaves out."""
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]


def error_race(ax_curve, ax_bar, data: dict, key: str, colors: dict) -> None:
    """Training error against steps for each arm at its own learning rate (left), and the
    steps each took to the target (right): the activations and preprocess experiments."""
    for row in data["table"]:
        name = row[key]
        curve = data["curves"][name]
        ragged_band(
            ax_curve,
            curve["steps"],
            curve["errors"],
            f"{name} (lr {row['lr']:g})",
            color=colors.get(name),
        )
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_curve.set_yscale("log")
    labelled(
        ax_curve,
        "training error while training",
        "SGD step",
        "training error (log scale)",
        legend=7,
    )
    steps_bars(
        ax_bar,
        [row[key] for row in data["table"]],
        [row["steps"] for row in data["table"]],
        data["budget"],
        [colors.get(row[key]) for row in data["table"]],
    )
    ax_bar.set_title(f"steps to {data['target']:.0%} training error")


def labelled(ax, title: str, xlabel: str, ylabel: str, legend: float | None = 8, **kw) -> None:
    """Title and axis labels (and any other `Axes.set` keyword), then a legend in that font
    size (None: no legend)."""
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, **kw)
    if legend is not None:
        ax.legend(fontsize=legend)


def grid(*axes) -> None:
    """A light grid on each of the axes."""
    for ax in axes:
        ax.grid(alpha=0.3)


def layer_band(ax, per_seed: Sequence[Sequence[float]], label: str, color=None) -> None:
    """`band` of a per-layer figure over layers 1..n, with a dot per layer."""
    band(ax, layer_numbers(len(per_seed[0])), per_seed, label, color=color, marker="o", ms=3)
