"""The figures of a training run's report, drawn from the Monitor's records: what the
lecture draws when babysitting a run. Drawing only; `babysit.checks.training_run` decides."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from babysit.checks.lr import UPDATE_RATIO_TARGET
from babysit.checks.training_run import RUN_RATIO_HIGH, RUN_RATIO_LOW, smooth
from babysit.report.html import new_figure

__all__ = [
    "accuracy_figure",
    "filters_figure",
    "histograms_over_time_figure",
    "loss_figure",
    "update_ratio_over_time_figure",
]

_BLUE, _ORANGE, _GREY = "#0969da", "#bc4c00", "#8c959f"
MAX_SERIES = 12  # parameters (or layers) drawn per figure
MAX_FILTERS = 32
HISTOGRAM_TIMES = 4  # probes per layer in the histograms-over-time figure


def loss_figure(records: Sequence[dict[str, Any]], window: int) -> Figure | None:
    points = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    if len(points) < 2:
        return None
    steps, values = zip(*points, strict=True)
    fig = new_figure(8, 3.2)
    ax = fig.subplots()
    ax.plot(steps, values, color=_GREY, linewidth=0.6, label="loss per step")
    ax.plot(steps, smooth(values, window), color=_BLUE, linewidth=1.6, label="smoothed")
    if min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    return fig


def accuracy_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    rows = [r for r in records if "train_accuracy" in r or "val_accuracy" in r]
    if not rows:
        return None
    use_epoch = all("epoch" in r for r in rows)
    fig = new_figure(6, 3.2)
    ax = fig.subplots()
    for key, color in (("train_accuracy", _BLUE), ("val_accuracy", _ORANGE)):
        pts = [
            (r["epoch"] if use_epoch else r["step"], r[key]) for r in rows if r.get(key) is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", color=color, label=key.split("_")[0])
    ax.set_xlabel("epoch" if use_epoch else "step")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return fig


def update_ratio_over_time_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for name, value in (r.get("update_ratios") or {}).items():
            if name.endswith("weight") and value is not None and value > 0:
                series.setdefault(name, []).append((r["step"], value))
    if not series:
        return None
    fig = new_figure(8, 3.4)
    ax = fig.subplots()
    ax.axhspan(RUN_RATIO_LOW, RUN_RATIO_HIGH, color="#dafbe1", zorder=0)
    ax.axhline(UPDATE_RATIO_TARGET, color="#1a7f37", linestyle="--", linewidth=1)
    for name, pts in list(series.items())[:MAX_SERIES]:
        ax.plot(*zip(*pts, strict=True), marker=".", linewidth=1, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||dW|| / ||W||")
    ax.legend(fontsize=7, ncol=2)
    return fig


def histograms_over_time_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    by_layer: dict[str, list[tuple[int, dict]]] = {}
    for r in records:
        for layer in r.get("layers") or ():
            if layer.get("activation") and layer.get("histogram"):
                by_layer.setdefault(layer["name"], []).append((r["step"], layer))
    if not by_layer:
        return None
    names = list(by_layer)[:MAX_SERIES]
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = new_figure(2.6 * cols, 2.2 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        probes = by_layer[name]
        chosen = [
            probes[round(i * (len(probes) - 1) / max(1, HISTOGRAM_TIMES - 1))]
            for i in range(min(HISTOGRAM_TIMES, len(probes)))
        ]
        for k, (step, layer) in enumerate(chosen):
            counts = layer["histogram"]
            low, high = layer.get("histogram_range") or (0.0, 1.0)
            width = (high - low) / len(counts)
            centers = [low + (i + 0.5) * width for i in range(len(counts))]
            total = sum(counts) or 1
            shade = 0.25 + 0.75 * k / max(1, len(chosen) - 1)
            ax.plot(
                centers,
                [c / total for c in counts],
                color=(0.04, 0.41, 0.85, shade),
                linewidth=1,
                label=f"step {step}",
            )
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return fig


def filters_figure(first_layer: dict[str, Any] | None) -> Figure | None:
    """The first layer's weights as images (CS231n: noisy filters mean an undertrained net
    or too little regularization; smooth, diverse ones a good one)."""
    if not first_layer:
        return None
    filters = first_layer["filters"][:MAX_FILTERS]  # (n, channels, height, width) lists
    if not filters:
        return None
    cols = min(len(filters), 8)
    rows = math.ceil(len(filters) / cols)
    fig = new_figure(1.1 * cols, 1.1 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, f in zip(axes.flat, filters, strict=False):
        flat = [v for channel in f for row in channel for v in row]
        low, high = min(flat), max(flat)
        span = (high - low) or 1.0
        scaled = [[[(v - low) / span for v in row] for row in channel] for channel in f]
        if len(scaled) == 3:
            ax.imshow(
                [
                    [[scaled[c][i][j] for c in range(3)] for j in range(len(scaled[0][0]))]
                    for i in range(len(scaled[0]))
                ]
            )
        else:
            ax.imshow(scaled[0], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(filters) :]:
        ax.axis("off")
    return fig
