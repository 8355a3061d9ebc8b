"""The checkup's figures, drawn from the report's measurements (the JSON dicts, so that a
saved report can be drawn again from report.json alone). Plots draw; they never decide:
the thresholds they show are the ones the checks stored with their measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from babysit.report.html import new_figure

__all__ = [
    "activation_figure",
    "histogram_figure",
    "lr_figure",
    "overfit_figure",
    "training_figure",
    "update_ratio_figure",
]

# The lecture's histogram figure shows ten layers; more panels get too small to read.
MAX_HISTOGRAMS = 12
_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#0969da", "#d97706", "#1a7f37", "#cf222e", "#8c959f"


def _finite(values: Sequence[Any]) -> list[float]:
    return [v if isinstance(v, int | float) and math.isfinite(v) else math.nan for v in values]


def _short(name: str, limit: int = 14) -> str:
    """A layer name cut to `limit` characters for a tick label, as plain text: matplotlib reads
    a pair of `$` as mathtext (`$\\frac{$` fails to parse), so each `$` is escaped."""
    name = str(name)
    name = name if len(name) <= limit else "…" + name[-(limit - 1) :]
    return name.replace("$", r"\$")


def _side_by_side(width: float, height: float) -> tuple[Figure, Axes, Axes]:
    """A figure of that size in inches with two panels side by side."""
    fig = new_figure(width, height)
    left, right = fig.subplots(1, 2)
    return fig, left, right


def _activation_layers(layers: Sequence[dict]) -> list[dict]:
    acts = [s for s in layers if s.get("activation") not in (None, "softmax", "identity")]
    return acts if len(acts) >= 2 else list(layers)


def activation_figure(layers: Sequence[dict], init: dict | None = None) -> Figure | None:
    """Per-layer mean and std of the activations at init, and the gradient's per-example
    norm across depth: flat lines are healthy (CS231n Lecture 6)."""
    chosen = _activation_layers(layers)
    if not chosen:
        return None
    names = [_short(s["name"]) for s in chosen]
    x = list(range(len(chosen)))
    fig, left, right = _side_by_side(10, 3.6)
    means = _finite([s["mean"] for s in chosen])
    stds = _finite([s["std"] for s in chosen])
    positive = [v for v in stds if v > 0]
    if positive and max(positive) / min(positive) > 50:
        # Orders of magnitude apart (a collapse or a blow-up): a log axis, with |mean|.
        left.semilogy(x, stds, "s-", color=_ORANGE, label="std")
        left.semilogy(x, [abs(v) for v in means], "o--", color=_BLUE, label="|mean|")
        left.set_title("activations at init, per layer (log)")
    else:
        left.plot(x, means, "o-", color=_BLUE, label="mean")
        left.plot(x, stds, "s-", color=_ORANGE, label="std")
        left.axhline(0, color=_GREY, lw=0.8)
        left.set_title("activations at init, per layer")
    left.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    left.legend(fontsize=8)
    depth = (init or {}).get("depth_layers")
    grads = (init or {}).get("grad_norm")
    if depth and grads and any(g for g in grads if g):
        gx, values, labels = list(range(len(depth))), grads, [_short(n) for n in depth]
    else:
        gx, values, labels = x, [s.get("grad_std") for s in chosen], names
    positive = [v for v in _finite(values) if v > 0]
    if positive:
        right.semilogy(gx, _finite(values), "o-", color=_GREEN)
        # At least four decades around the values, so that a flat line looks flat.
        centre = math.sqrt(min(positive) * max(positive))
        right.set_ylim(min(min(positive) / 3, centre / 100), max(max(positive) * 3, centre * 100))
    right.set_xticks(gx, labels, rotation=45, ha="right", fontsize=8)
    right.set_title("gradient w.r.t. each layer's output (log)")
    return fig


def histogram_figure(layers: Sequence[dict]) -> Figure | None:
    """Histograms of each layer's activations at init (the lecture's figure)."""
    chosen = [s for s in _activation_layers(layers) if s.get("histogram")]
    if not chosen:
        return None
    if len(chosen) > MAX_HISTOGRAMS:
        step = (len(chosen) - 1) / (MAX_HISTOGRAMS - 1)
        chosen = [chosen[round(i * step)] for i in range(MAX_HISTOGRAMS)]
    cols = min(len(chosen), 6)
    rows = math.ceil(len(chosen) / cols)
    fig = new_figure(2.0 * cols, 1.9 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, s in zip(axes.flat, chosen, strict=False):
        counts = s["histogram"]
        low, high = s.get("histogram_range") or (0.0, 1.0)
        width = (high - low) / max(len(counts), 1)
        edges = [low + i * width for i in range(len(counts))]
        ax.bar(edges, counts, width=width, align="edge", color=_BLUE)
        ax.set_title(f"{_short(s['name'], 18)}\nstd {s['std']:.2g}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    fig.suptitle("activation histograms at init", fontsize=10)
    return fig


def lr_figure(lr_range: dict, lr_run: dict | None = None) -> Figure | None:
    """The range test's loss against the learning rate (log scale), smoothed, with the usable
    range shaded and the suggestion (and the given lr) marked."""
    lrs, losses = lr_range.get("lr") or [], lr_range.get("loss") or []
    if not lrs or not losses:
        return None
    fig = new_figure(8, 3.8)
    ax = fig.subplots()
    n = min(len(lrs), len(losses))
    ax.plot(lrs[:n], _finite(losses[:n]), color=_GREY, lw=0.8, alpha=0.8, label="loss per step")
    smoothed = lr_range.get("smoothed") or []
    if smoothed:
        ax.plot(lrs[: len(smoothed)], smoothed, color=_BLUE, lw=2, label="smoothed")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    start = lr_range.get("start_loss")
    finite = [v for v in _finite(losses) if math.isfinite(v)]
    if finite:
        top = max(3 * start, 1e-9) if start else max(finite)
        ax.set_ylim(max(min(finite) * 0.9 - 0.05, 0) if min(finite) >= 0 else None, top)
    if lr_range.get("low") and lr_range.get("high"):
        ax.axvspan(
            lr_range["low"], lr_range["high"], color=_GREEN, alpha=0.12, label="usable range"
        )
    suggestion = lr_range.get("suggestion")
    if suggestion:
        ax.axvline(suggestion, color=_GREEN, lw=2, ls="--", label=f"suggestion {suggestion:.2g}")
    user = (lr_run or {}).get("user_lr")
    if user:
        ax.axvline(user, color=_ORANGE, lw=2, ls=":", label=f"given lr {user:.2g}")
    ax.set_title(f"learning-rate range test ({lr_range.get('optimizer', '')})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def overfit_figure(overfit: dict) -> Figure | None:
    """Loss (and accuracy) while fitting the tiny subset, one line per learning rate tried."""
    runs = overfit.get("runs") or []
    if not runs:
        return None
    fig, left, right = _side_by_side(8, 3.6)
    colors = [_BLUE, _ORANGE, _GREEN, _RED]
    for run, color in zip(runs, colors * 3, strict=False):
        loss = _finite(run.get("step_loss") or [])
        left.plot(range(1, len(loss) + 1), loss, color=color, label=f"Adam lr {run['lr']:g}")
        checks = [c for c in run.get("checks") or [] if c[2] is not None]
        if checks:
            right.plot(
                [c[0] for c in checks],
                [c[2] for c in checks],
                "o-",
                color=color,
                ms=3,
                label=f"lr {run['lr']:g}",
            )
    if all(v > 0 for r in runs for v in _finite(r.get("step_loss") or []) if math.isfinite(v)):
        left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title(f"loss on {overfit.get('examples', '?')} examples, no regularization")
    left.legend(fontsize=8)
    right.set_ylim(-0.02, 1.05)
    right.axhline(1.0, color=_GREY, lw=0.8, ls="--")
    right.set_xlabel("step")
    right.set_title("training accuracy")
    if right.lines[1:]:
        right.legend(fontsize=8)
    return fig


def update_ratio_figure(lr_run: dict) -> Figure | None:
    """Left: the loss of the short run at the chosen lr (and at the suggestion, when it was
    run for comparison). Right: the median update/weight ratio per layer, log scale, with
    the 1e-3 target and the flagged zone."""
    run = lr_run.get("run") or {}
    ratios = run.get("update_ratios") or {}
    loss = run.get("step_loss") or []
    if not ratios and not loss:
        return None
    fig, left, right = _side_by_side(10, 3.6)
    left.plot(
        range(1, len(loss) + 1), _finite(loss), color=_BLUE, label=f"lr {run.get('lr', 0):.2g}"
    )
    reference = lr_run.get("reference_run")
    if reference:
        ref = reference.get("step_loss") or []
        left.plot(
            range(1, len(ref) + 1),
            _finite(ref),
            color=_GREEN,
            label=f"suggested lr {reference.get('lr', 0):.2g}",
        )
    left.set_xlabel("step")
    left.set_title(f"short run ({run.get('optimizer', '')})")
    left.legend(fontsize=8)
    if ratios:
        names = list(ratios)
        values = [v if v and math.isfinite(v) and v > 0 else 1e-12 for v in ratios.values()]
        low, high = lr_run.get("ratio_range") or (1e-5, 1e-1)
        colors = [_RED if v < low or v > high else _BLUE for v in values]
        x = list(range(len(names)))
        right.bar(x, values, color=colors)
        right.set_yscale("log")
        right.axhline(1e-3, color=_GREEN, ls="--", lw=1.5, label="1e-3 (CS231n)")
        right.axhspan(min(min(values), low) / 10, low, color=_RED, alpha=0.08)
        right.axhspan(high, max(max(values), high) * 10, color=_RED, alpha=0.08)
        right.set_xticks(x, [_short(n) for n in names], rotation=45, ha="right", fontsize=8)
        right.set_title("update / weight ratio per layer (median)")
        right.legend(fontsize=8)
    return fig


def training_figure(training: dict) -> Figure | None:
    """Training and validation accuracy (and loss) per epoch of the short real run."""
    epochs = training.get("epochs") or []
    if not epochs:
        return None
    fig, left, right = _side_by_side(8, 3.4)
    x = [e["epoch"] for e in epochs]
    for ax, quantity in ((left, "accuracy"), (right, "loss")):
        for split, color in (("train", _BLUE), ("val", _ORANGE)):
            values = [e.get(f"{split}_{quantity}") for e in epochs]
            if any(v is not None for v in values):
                ax.plot(x, _finite(values), "o-", color=color, ms=3, label=split)
        ax.set_title(f"{quantity} per epoch")
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=8)
    return fig
