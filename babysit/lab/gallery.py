"""The lab's output: a rich table of claims per experiment, and the HTML gallery (index.html
with every experiment's claims, PASS/FAIL badges and figures).

The lab decides, this module draws: every figure is built from a Result's `data`, which is
also saved as `NAME.json` next to the gallery, so the gallery can be rebuilt from the folder.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape as markup
from rich.table import Table

from babysit._io import write_atomic
from babysit.errors import UsageError
from babysit.lab.base import Claim, Experiment, Result
from babysit.report.html import Section, escape, figure_png, image, new_figure, page, table
from babysit.report.terminal import stdout

__all__ = [
    "FIGURES",
    "check_out_dir",
    "claims_table",
    "experiment_page",
    "experiments_table",
    "figures",
    "gallery",
    "load_results",
    "save",
    "section_html",
    "summary_table",
]

# --- terminal -----------------------------------------------------------------------------

_VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "KNOWN": "bold yellow"}


def _verdict(claim: Claim) -> str:
    return "KNOWN" if claim.known_failure else claim.verdict


def _verdict_text(claim: Claim) -> str:
    return "FAIL (known)" if claim.known_failure else claim.verdict


def claims_table(result: Result, console: Console = stdout) -> None:
    """One row per claim: what it says, its source, the threshold, the measurement, PASS/FAIL;
    then the known exceptions, spelled out."""
    table_ = Table(
        title=f"[bold]{markup(result.name)}[/]: {markup(result.title)}",
        caption=f"{markup(result.setting)}\n{result.seconds:.0f} s wall, "
        f"{result.cpu_seconds:.0f} s CPU on {markup(result.device)}, scale {result.scale}",
        show_lines=True,
        expand=True,
    )
    table_.add_column("claim", ratio=4)
    table_.add_column("source", ratio=2)
    table_.add_column("expected", ratio=2)
    table_.add_column("measured", ratio=3)
    table_.add_column("verdict", no_wrap=True)
    for claim in result.claims:
        verdict = _verdict(claim)
        table_.add_row(
            markup(claim.text),
            markup(claim.source),
            markup(claim.expected),
            markup(claim.measured),
            f"[{_VERDICT_STYLE[verdict]}]{_verdict_text(claim)}[/]",
        )
    console.print(table_)
    for claim in result.claims:
        if claim.known_failure:
            console.print(f"[yellow]known exception:[/] {markup(claim.exception)}")


def experiments_table(experiments: Sequence[Experiment], console: Console = stdout) -> None:
    """`babysit lab --list`: each experiment's name and what it checks."""
    table_ = Table(title="babysit lab experiments", show_lines=True)
    table_.add_column("name", no_wrap=True)
    table_.add_column("what it checks")
    for experiment in experiments:
        table_.add_row(markup(experiment.name), markup(experiment.description))
    console.print(table_)


def summary_table(results: Sequence[Result], console: Console = stdout) -> None:
    """One row per experiment: claims passed, failed, known exceptions, and time taken."""
    table_ = Table(title="babysit lab")
    for column in ("experiment", "PASS", "FAIL", "known", "wall s", "CPU s"):
        table_.add_column(column, justify="left" if column == "experiment" else "right")
    for result in results:
        passed = sum(c.passed for c in result.claims)
        known = sum(c.known_failure for c in result.claims)
        failed = len(result.claims) - passed - known
        table_.add_row(
            markup(result.name),
            str(passed),
            f"[bold red]{failed}[/]" if failed else "0",
            f"[yellow]{known}[/]" if known else "0",
            f"{result.seconds:.0f}",
            f"{result.cpu_seconds:.0f}",
        )
    console.print(table_)


# --- saving -------------------------------------------------------------------------------


def check_out_dir(out: str | Path) -> Path:
    """The gallery folder, created if needed; a UsageError if it cannot be."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a folder: give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the gallery folder {str(path)!r}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"the gallery folder {str(path)!r} is not writable: choose another")
    return path


def _json_number(value: object) -> object:
    """NumPy and torch scalars as plain numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot save a {type(value).__name__} in a lab result")


def load_results(out: str | Path, order: Sequence[str] = ()) -> list[Result]:
    """Every lab result saved in `out` (NAME.json), in `order`, then by name; files that are
    not lab results are left alone."""
    results = {}
    for path in sorted(Path(out).glob("*.json")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            result = Result.from_dict(d)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if result.name == path.stem:
            results[result.name] = result
    rank = {name: i for i, name in enumerate(order)}
    return [results[n] for n in sorted(results, key=lambda n: (rank.get(n, len(rank)), n))]


def save(result: Result, out: str | Path, order: Sequence[str] = ()) -> Path:
    """Save `result` as out/NAME.json and its page out/NAME.html, then rebuild out/index.html
    from every result in the folder (their sections are read back from their pages, so only
    this experiment's figures are drawn). Returns the index path."""
    path = check_out_dir(out)
    text = json.dumps(result.to_dict(), indent=1, default=_json_number)
    write_atomic(path / f"{result.name}.json", text)
    write_atomic(path / f"{result.name}.html", experiment_page(result, section_html(result)))
    index = path / "index.html"
    results = load_results(path, order)
    write_atomic(index, gallery(results, [_saved_section(path, r) for r in results]))
    return index


def _saved_section(folder: Path, result: Result) -> str:
    """An experiment's section, from its saved page when that page is at least as new as its
    result; drawn again (and the page rewritten) otherwise."""
    page_path, json_path = folder / f"{result.name}.html", folder / f"{result.name}.json"
    try:
        if page_path.stat().st_mtime >= json_path.stat().st_mtime:
            text = page_path.read_text(encoding="utf-8")
            start, end = text.find(_SECTION_START), text.find(_SECTION_END)
            if 0 <= start < end:
                return text[start + len(_SECTION_START) : end]
    except OSError:
        pass
    section = section_html(result)
    write_atomic(page_path, experiment_page(result, section))
    return section


# --- the gallery --------------------------------------------------------------------------

_BADGE = {"PASS": "pass", "FAIL": "fail", "KNOWN": "sev-warning"}


def _badge(claim: Claim) -> str:
    return (
        f'<span class="{_BADGE[_verdict(claim)]}" style="white-space: nowrap">'
        f"{escape(_verdict_text(claim))}</span>"
    )


class _Anchored(Section):
    """A Section whose heading can be linked to (#name)."""

    def __init__(self, anchor: str, title: str):
        super().__init__(title)
        self.anchor = anchor

    def render(self) -> str:
        return f'<section id="{escape(self.anchor)}">{super().render()[len("<section>") :]}'


def _claims_html(result: Result) -> str:
    rows = []
    for claim in result.claims:
        note = (
            f'<br><span class="muted">Known exception: {escape(claim.exception)}</span>'
            if claim.known_failure
            else ""
        )
        rows.append(
            [
                escape(claim.text) + note,
                escape(claim.source),
                escape(claim.expected),
                escape(claim.measured),
                _badge(claim),
            ]
        )
    return table(["claim", "source", "expected", "measured", "verdict"], rows, raw=True)


_SECTION_START = "<!-- babysit-lab-section -->"
_SECTION_END = "<!-- /babysit-lab-section -->"
_SUBTITLE = (
    "CS231n Lecture 6 and the papers behind it, reproduced on digits and generated data, "
    "each claim checked PASS/FAIL."
)


class _Raw(Section):
    """A block of ready HTML placed in a page as is."""

    def __init__(self, html_text: str):
        super().__init__("")
        self.html_text = html_text

    def render(self) -> str:
        return self.html_text


def section_html(result: Result) -> str:
    """One experiment's section: what it shows, its setting, its claims with PASS/FAIL badges,
    and its figures (PNG data URIs)."""
    section = _Anchored(result.name, f"{result.name}: {result.title}")
    section.add(f"<p>{escape(result.summary)}</p>")
    section.add(f'<p class="muted">Setting: {escape(result.setting)}.</p>')
    section.add(_claims_html(result))
    for png, caption in figures(result):
        section.add(image(png, alt=caption, caption=caption))
    section.add(
        f'<p class="muted">Seeds {escape(", ".join(map(str, result.seeds)))}; '
        f"{result.seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU on "
        f"{escape(result.device)}, scale {escape(result.scale)}.</p>"
    )
    return _SECTION_START + section.render() + _SECTION_END


def experiment_page(result: Result, section: str) -> str:
    """A page with one experiment's section, and a link back to the gallery."""
    back = _Raw('<p><a href="index.html">&larr; all experiments</a></p>')
    return page(f"babysit lab: {result.name}", [back, _Raw(section)], subtitle=_SUBTITLE)


def gallery(results: Sequence[Result], sections: Sequence[str] | None = None) -> str:
    """The whole gallery page: a summary with links, then one section per experiment
    (`sections`, as `section_html` makes them; drawn here when not given)."""
    overview = _Anchored("summary", "Summary")
    rows = []
    for result in results:
        badges = " ".join(_badge(c) for c in result.claims)
        rows.append(
            [
                f'<a href="#{escape(result.name)}">{escape(result.name)}</a>',
                escape(result.title),
                badges,
                escape(f"{result.seconds:.0f} s on {result.device} ({result.scale})"),
            ]
        )
    overview.add(table(["experiment", "what it shows", "claims", "time"], rows, raw=True))
    overview.add(
        '<p class="muted">PASS and FAIL are decided by the threshold in each claim\'s '
        '"expected" column. "FAIL (known)" is a claim that does not reproduce at this scale; '
        "its note says why and what would show it. Ranges are [min, max] over seeds; a "
        "difference inside them counts as not shown. Each experiment also has a page of its "
        "own, NAME.html, and its numbers in NAME.json.</p>"
    )
    if sections is None:
        sections = [section_html(r) for r in results]
    return page("babysit lab", [overview, *(_Raw(s) for s in sections)], subtitle=_SUBTITLE)


def figures(result: Result) -> list[tuple[bytes, str]]:
    """The experiment's figures as (PNG bytes, caption)."""
    draw = FIGURES.get(result.name)
    if draw is None:
        return []
    return [(figure_png(fig), caption) for fig, caption in draw(result.data)]


# --- figure helpers -----------------------------------------------------------------------

_COLORS = {
    "small": "#1f77b4",
    "large": "#d62728",
    "xavier": "#2ca02c",
    "he": "#9467bd",
    "orthogonal": "#ff7f0e",
    "lsuv": "#17becf",
}


def _layers(n: int) -> np.ndarray:
    return np.arange(1, n + 1)


def _band(ax, x, per_seed: Sequence[Sequence[float]], label: str, color=None, **kw) -> None:
    """Median over seeds as a line, min..max as a shaded band."""
    values = np.array(per_seed, dtype=float)
    if values.ndim == 1:
        values = values[None]
    line = ax.plot(x, np.median(values, axis=0), label=label, color=color, **kw)[0]
    if len(values) > 1:
        ax.fill_between(
            x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.18, lw=0
        )


def _ragged_band(ax, steps_per_seed, per_seed, label: str, color=None, **kw) -> None:
    """Like _band for curves of different lengths (runs that stopped early): NaN-padded."""
    longest = max(steps_per_seed, key=len)
    values = np.full((len(per_seed), len(longest)), np.nan)
    for i, curve in enumerate(per_seed):
        values[i, : len(curve)] = _finite(curve)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    line = ax.plot(longest, median, label=label, color=color, **kw)[0]
    if len(per_seed) > 1:
        ax.fill_between(longest, low, high, color=line.get_color(), alpha=0.18, lw=0)


def _steps_bars(ax, names, steps_lists, budget: int, colors) -> None:
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


def _finite(values: Sequence[float]) -> list[float]:
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]


# --- per-experiment figures ---------------------------------------------------------------


def _init_figures(data: dict) -> list[tuple[Figure, str]]:
    n = data["layers"]
    x = _layers(n)
    curves = data["curves"]
    fig = new_figure(11, 3.6)
    axes = fig.subplots(1, 3)
    for key, curve in curves.items():
        act, init = key.split("/")
        style = {"color": _COLORS[init], "ls": "-" if act == "tanh" else "--", "marker": "o"}
        label = f"{act}, {init}"
        axes[0].plot(x, _finite([abs(m) for m in curve["mean"]]), label=label, ms=3, **style)
        axes[1].plot(x, _finite(curve["std"]), label=label, ms=3, **style)
        axes[2].plot(x, _finite(curve["grad"]), label=label, ms=3, **style)
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
            ax.stairs(counts, edges, fill=True, color=_COLORS[init], alpha=0.85)
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


def _depth_figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(11, 3.8)
    ax_error, ax_grad = fig.subplots(1, 2)
    for init in ("he", "xavier"):
        _ragged_band(
            ax_error,
            data["error_steps"][init],
            data["errors"][init],
            f"{init} init",
            color=_COLORS[init],
        )
        grads = data["grad_norms"][init]
        _band(
            ax_grad,
            _layers(len(grads[0])),
            grads,
            f"{init} init",
            color=_COLORS[init],
            marker="o",
            ms=3,
        )
    ax_error.axhline(0.9, color="gray", ls=":", lw=1, label="chance (90%)")
    ax_error.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_error.set(
        title="30-layer ReLU net: He trains, Xavier stalls",
        xlabel="SGD step",
        ylabel="training error",
        ylim=(0, 1),
    )
    ax_error.legend(fontsize=8)
    ax_grad.set_yscale("log")
    ax_grad.set(
        title="why: weight-gradient norm at init, per layer",
        xlabel="layer (31 = logits)",
        ylabel="||dL/dW|| (log scale)",
    )
    ax_grad.legend(fontsize=8)
    for ax in (ax_error, ax_grad):
        ax.grid(alpha=0.3)
    return [
        (
            fig,
            "Left: training error on 512 training images (median over seeds, band: "
            "min..max). Right: the norm of each layer's weight gradient at init; Xavier's are "
            "~2^-15 of He's at every layer, so its steps barely move the weights.",
        )
    ]


def _error_race(ax_curve, ax_bar, data: dict, key: str, colors: dict) -> None:
    """Training error against steps for each arm at its own learning rate (left), and the
    steps each took to the target (right): the activations and preprocess experiments."""
    for row in data["table"]:
        name = row[key]
        curve = data["curves"][name]
        _ragged_band(
            ax_curve,
            curve["steps"],
            curve["errors"],
            f"{name} (lr {row['lr']:g})",
            color=colors.get(name),
        )
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_curve.set_yscale("log")
    ax_curve.set(
        title="training error while training",
        xlabel="SGD step",
        ylabel="training error (log scale)",
    )
    ax_curve.legend(fontsize=7)
    _steps_bars(
        ax_bar,
        [row[key] for row in data["table"]],
        [row["steps"] for row in data["table"]],
        data["budget"],
        [colors.get(row[key]) for row in data["table"]],
    )
    ax_bar.set_title(f"steps to {data['target']:.0%} training error")


_ACTIVATION_COLORS = {
    "sigmoid": "#7f7f7f",
    "tanh": "#d62728",
    "relu": "#1f77b4",
    "leaky_relu": "#aec7e8",
    "prelu": "#9467bd",
    "elu": "#2ca02c",
    "maxout": "#ff7f0e",
}


def _activations_figures(data: dict) -> list[tuple[Figure, str]]:
    table_ = data["table"]
    fig = new_figure(12, 3.9)
    ax_curve, ax_bar, ax_mean = fig.subplots(1, 3)
    _error_race(ax_curve, ax_bar, data, "activation", _ACTIVATION_COLORS)
    for row in table_:
        means = row["mean_activation"]
        width = 2.5 if row["activation"] in ("relu", "elu") else 1
        ax_mean.plot(
            _layers(len(means)),
            means,
            marker="o",
            ms=3,
            lw=width,
            label=row["activation"],
            color=_ACTIVATION_COLORS.get(row["activation"]),
        )
    ax_mean.axhline(0, color="black", lw=0.8)
    ax_mean.set(
        title="mean activation per layer, after training",
        xlabel="hidden layer",
        ylabel="mean output",
    )
    ax_mean.legend(fontsize=7)
    for ax in (ax_curve, ax_bar, ax_mean):
        ax.grid(alpha=0.3)
    return [
        (
            fig,
            "Left: training error (median over seeds, band: min..max), each activation at "
            "its own fastest learning rate. Middle: steps to the target (bar: median, line: "
            "min..max; hatched: not reached within the budget). Right: the mean output of "
            "each hidden layer at the end of training; ELU sits closer to zero than ReLU.",
        )
    ]


_INPUT_COLORS = {
    "raw": "#d62728",
    "centred": "#1f77b4",
    "standardized": "#2ca02c",
    "whitened": "#9467bd",
}


def _preprocess_figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_curve, ax_bar, ax_sens = fig.subplots(1, 3)
    _error_race(ax_curve, ax_bar, data, "input", _INPUT_COLORS)
    eps = data["epsilons"]
    for kind in ("raw", "centred"):
        _band(
            ax_sens,
            eps,
            data["sensitivity"][kind],
            f"{kind} inputs",
            color=_INPUT_COLORS[kind],
            marker="o",
            ms=3,
        )
    ax_sens.set_xscale("log")
    ax_sens.set_yscale("log")
    ax_sens.set(
        title="same function, raw vs centred inputs",
        xlabel="relative weight change ||dW|| / ||W||",
        ylabel="mean |loss change| (log scale)",
    )
    ax_sens.legend(fontsize=8)
    for ax in (ax_curve, ax_bar, ax_sens):
        ax.grid(alpha=0.3)
    return [
        (
            fig,
            "Left and middle: training error and steps to the target for each input "
            "preprocessing, each at its own best learning rate (median over seeds; band and "
            "line: min..max). Right: how much the training loss moves when every weight "
            "matrix is changed by a small random amount, for one trained net written for "
            "raw and for centred inputs (identical outputs before the change).",
        )
    ]


_NET_COLORS = {"plain": "#d62728", "bn": "#1f77b4"}
_NET_LABELS = {"plain": "plain", "bn": "with BN"}


def _batchnorm_figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_curve, ax_plain, ax_bn = fig.subplots(1, 3)
    for key in ("plain", "bn"):
        curve = data["curves"][key]
        _ragged_band(
            ax_curve, curve["steps"], curve["errors"], _NET_LABELS[key], color=_NET_COLORS[key]
        )
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_curve.set_yscale("log")
    ax_curve.set(
        title="sigmoid net, Xavier init, same lr",
        xlabel="SGD step",
        ylabel="validation error (log scale)",
    )
    ax_curve.legend(fontsize=8)
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
        ax.set(
            title=f"input to a last-layer sigmoid, {_NET_LABELS[key]}",
            xlabel="SGD step",
            ylabel="value",
            ylim=(low - margin, high + margin),
        )
        ax.legend(fontsize=8)
    for ax in (ax_curve, ax_plain, ax_bn):
        ax.grid(alpha=0.3)
    out = [
        (
            fig,
            "The paper's Fig. 1 on digits. Left: validation error (median over seeds, band: "
            "min..max). Middle and right: the 15th, 50th and 85th percentiles of one unit's "
            "input to the last sigmoid layer over training (the unit whose drift is the "
            "median one, first seed; same y axis): without BN the median wanders; with BN it "
            "stays, while the spread widens as BN's scale is learnt.",
        )
    ]
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
    out.append(
        (
            fig2,
            "Left: steps to the target from three inits (bar: median, line: min..max, hatched: "
            "not reached in the budget by some seed). Right: the same net with ReLU units "
            "over a ladder of learning rates; diverged = NaN or loss > 3x the initial loss.",
        )
    )
    return out


def _rectangle(xy, width: float, height: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, color=color)


def _lsuv_figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_var, ax_curve, ax_bar = fig.subplots(1, 3)
    inits = list(data["variances"])
    for init in inits:
        variances = data["variances"][init]
        _band(
            ax_var,
            _layers(len(variances[0])),
            variances,
            f"{init}",
            color=_COLORS[init],
            marker="o",
            ms=3,
        )
        curve = data["curves"][init]
        _ragged_band(ax_curve, curve["steps"], curve["errors"], init, color=_COLORS[init])
    ax_var.axhline(1.0, color="black", lw=0.8)
    ax_var.set_yscale("log")
    ax_var.set(
        title="output variance of each layer at init",
        xlabel="layer (last = logits)",
        ylabel="variance (log scale)",
    )
    ax_var.legend(fontsize=8)
    ax_curve.axhline(data["target"], color="black", ls="--", lw=1, label="target")
    ax_curve.set(
        title="training error while training",
        xlabel="SGD step",
        ylabel="training error",
        ylim=(0, 1),
    )
    ax_curve.legend(fontsize=8)
    _steps_bars(
        ax_bar,
        inits,
        [data["steps"][i] for i in inits],
        data["budget"],
        [_COLORS[i] for i in inits],
    )
    ax_bar.set_title(f"steps to {data['target']:.0%} training error")
    for ax in (ax_var, ax_curve, ax_bar):
        ax.grid(alpha=0.3)
    return [
        (
            fig,
            "Left: the variance of each layer's output right after init, on training images "
            "LSUV was not fitted on (median over seeds, band: min..max). Middle and right: "
            "training error, and steps to the target, from each init.",
        )
    ]


def _search_figures(data: dict) -> list[tuple[Figure, str]]:
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
    ax_cdf.set(
        title="distance of the best trial's x to x*",
        xlabel="|x - x*|",
        ylabel="fraction of placements (CDF)",
    )
    ax_cdf.legend(fontsize=8)
    for key, color, marker in (("grid", "#d62728", "s"), ("random", "#1f77b4", "o")):
        lrs = [lr for run_ in data["digits"][key] for lr in run_["lrs"]]
        values = [v for run_ in data["digits"][key] for v in run_["values"]]
        ax_digits.scatter(
            lrs, values, s=12, alpha=0.5, color=color, marker=marker, label=f"{key} trials"
        )
    ax_digits.set_xscale("log")
    ax_digits.set(
        title="digits: every trial, all repeats",
        xlabel="learning rate (log scale)",
        ylabel="validation accuracy",
    )
    ax_digits.legend(fontsize=8)
    for ax in (ax_points, ax_cdf, ax_digits):
        ax.grid(alpha=0.3)
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
        ax.set(
            title="coarse to fine (first study)",
            xlabel="learning rate (log scale)",
            ylabel="validation accuracy",
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out.append(
            (
                fig2,
                "babysit.search: the coarse stage samples lr = 10^uniform(-6, 1); the second "
                "samples the range narrowed around the coarse stage's best trials (shaded).",
            )
        )
    return out


def _babysitting_figures(data: dict) -> list[tuple[Figure, str]]:
    fig = new_figure(12, 3.9)
    ax_lr, ax_fit, ax_ratio = fig.subplots(1, 3)
    rows = data["rows"]
    good = [r["good_lr"] for r in rows if r.get("good_lr")]
    labels = {
        "low": f"lr {data['lrs']['low']:g}: too low",
        "good": f"lr {np.median(good):.2g}: good" if good else "good lr",
        "high": f"lr {data['lrs']['high']:g}: too high",
    }
    colors = {"low": "#1f77b4", "good": "#2da44e", "high": "#cf222e"}
    for key in ("low", "good", "high"):
        curves = data["curves"][key]
        if not curves:
            continue
        _ragged_band(
            ax_lr,
            [list(range(1, len(c) + 1)) for c in curves],
            curves,
            labels[key],
            color=colors[key],
            marker="o" if key == "high" else None,
            ms=4,
        )
    ax_lr.set_yscale("log")
    ax_lr.set(title="loss at three learning rates", xlabel="SGD step", ylabel="loss (log scale)")
    ax_lr.legend(fontsize=8)
    fits = data["curves"]["overfit"]
    _ragged_band(
        ax_fit,
        [list(range(1, len(c) + 1)) for c in fits],
        fits,
        "20 examples, no regularization",
        color="#9467bd",
    )
    ax_fit.set_yscale("log")
    ax_fit.set(
        title="overfitting a tiny subset", xlabel="full-batch Adam step", ylabel="loss (log scale)"
    )
    ax_fit.legend(fontsize=8)
    ratios = data["ratios"]
    if ratios:
        names = list(ratios[0])
        for i, name in enumerate(names):
            values = [r[name] for r in ratios]
            ax_ratio.scatter([i] * len(values), values, color="#2da44e", zorder=3)
        ax_ratio.set_xticks(range(len(names)), names)
        ax_ratio.set_xlim(-0.6, len(names) - 0.4)
    low, high = data["band"]
    ax_ratio.axhspan(low, high, color="#2da44e", alpha=0.1, label="within a decade of 1e-3")
    ax_ratio.axhline(1e-3, color="black", lw=0.8, ls="--", label="1e-3")
    ax_ratio.set_yscale("log")
    ax_ratio.set_ylim(1e-5, 1)
    ax_ratio.set(
        title="update/weight ratio at the good lr",
        xlabel="layer",
        ylabel="median ||dW|| / ||W|| per step (log)",
    )
    ax_ratio.legend(fontsize=8)
    for ax in (ax_lr, ax_fit, ax_ratio):
        ax.grid(alpha=0.3)
    return [
        (
            fig,
            "Left: the loss at 1e-6 stays flat, at the range test's suggestion it falls, at "
            "1e6 it explodes within two steps (the run stops). Middle: with regularization "
            "off, 20 examples are fitted to 100%. Right: per layer, the median update/weight "
            "ratio over the run at the good learning rate, one dot per seed.",
        )
    ]


FIGURES: dict[str, Callable[[dict], list[tuple[Figure, str]]]] = {
    "init": _init_figures,
    "depth": _depth_figures,
    "activations": _activations_figures,
    "preprocess": _preprocess_figures,
    "batchnorm": _batchnorm_figures,
    "babysitting": _babysitting_figures,
    "search": _search_figures,
    "lsuv": _lsuv_figures,
}
"""Experiment name -> function(data) returning (figure, caption) pairs."""
