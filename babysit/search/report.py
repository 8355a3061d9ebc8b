"""Showing a search: the live table of trials, the closing summary, search.json and the HTML
page (validation accuracy against lr and weight decay on log axes, coloured by stage, as in
the CS231n notes' scatter; and the range each stage sampled). The search decides; this draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from babysit._io import write_atomic, write_json
from babysit.report.terminal import stderr, stdout
from babysit.search.plan import Plan
from babysit.search.pruner import PRUNE_REASON
from babysit.search.space import Categorical, Float, Int, Param, space_to_json
from babysit.search.stages import ERROR_ATTR, PARENT_ATTR, stage_of
from babysit.search.study import STEPS_ATTR, SearchResult

__all__ = ["LiveTrials", "print_summary", "result_dict", "write_report"]

# The live table shows the trials running now and this many of the latest finished ones.
LIVE_ROWS = 12
# The summary shows this many distinct errors per stage, each with this many trial numbers.
FAILED_SHOWN = 3
# Stage colours (matplotlib's tab10): the same stage has the same colour in every plot.
STAGE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_STATE_STYLE = {
    "COMPLETE": "green",
    "PRUNED": "yellow",
    "FAIL": "red",
    "RUNNING": "cyan",
    "WAITING": "dim",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def plain_text(text: object) -> str:
    """`text` for a matplotlib label, drawn as written: a `$` would start mathtext (a name
    such as `$\\frac{$` made the plot fail)."""
    return str(text).replace("$", r"\$")


def _note(trial: FrozenTrial) -> str:
    """Why a trial ended the way it did (its prune reason or its error), and which trial it
    continued."""
    note = trial.user_attrs.get(PRUNE_REASON) or trial.user_attrs.get(ERROR_ATTR) or ""
    parent = trial.user_attrs.get(PARENT_ATTR)
    return note if parent is None else f"continues #{parent}" + (f"; {note}" if note else "")


def _value(trial: FrozenTrial) -> float | None:
    return trial.value if trial.state == TrialState.COMPLETE else None


class LiveTrials:
    """A rich Live table on stderr, refreshed with `update(trials)` (a search's `progress`)."""

    def __init__(self, plan: Plan, study_name: str, console: Console = stderr):
        self.plan = plan
        self.study_name = study_name
        self.live = Live(Text(""), console=console, refresh_per_second=4, transient=False)
        # Not a terminal (a log file, a pipe): no redrawing, which would run into the next
        # line; the last table is printed once at the end.
        self.redraw = console.is_terminal
        self.console = console
        self.last: Group | None = None

    def __enter__(self) -> LiveTrials:
        if self.redraw:
            self.live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.redraw:
            self.live.stop()
        elif self.last is not None:
            self.console.print(self.last)

    def update(self, trials: Sequence[FrozenTrial]) -> None:
        self.last = self.render(trials)
        if self.redraw:
            self.live.update(self.last)

    def render(self, trials: Sequence[FrozenTrial]) -> Group:
        params = list(self.plan.space)
        header = Text()
        for index, stage in enumerate(self.plan.stages):
            mine = [t for t in trials if stage_of(t) == index]
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in mine)
            header.append(f"stage {index + 1}: {done}/{stage.trials} ({stage.budget})   ")
        table = Table(title=Text(f"search {self.study_name}"), title_justify="left")
        for column in ("#", "stage", "status", self.plan.metric, *params, "note"):
            table.add_column(
                Text(column), justify="right" if column not in ("status", "note") else "left"
            )
        running = [t for t in trials if t.state == TrialState.RUNNING]
        finished = [t for t in trials if t.state.is_finished() and stage_of(t) is not None]
        finished.sort(key=lambda t: t.datetime_complete or t.datetime_start or 0)
        for trial in [*finished[-LIVE_ROWS:], *running]:
            value = _value(trial)
            state = trial.state.name
            table.add_row(
                str(trial.number),
                str((stage_of(trial) or 0) + 1),
                Text(state.lower(), style=_STATE_STYLE.get(state, "")),
                "-" if value is None else f"{value:.4f}",
                *(Text(_fmt(trial.params[p]) if p in trial.params else "") for p in params),
                Text(_note(trial)),
            )
        return Group(header, table)


def print_summary(result: SearchResult, console: Console = stdout) -> None:
    """The best configuration, each stage's ranges and counts, and the boundary warnings."""
    plan = result.plan
    best = result.best_trial
    if best is None:
        console.print("[bold red]no trial completed[/]: nothing to recommend yet")
    else:
        summary = Table(title="best configuration")
        summary.add_column("hyperparameter")
        summary.add_column("value", justify="right")
        summary.add_row("trial", f"#{best.number}, stage {stage_of(best) + 1}")
        summary.add_row(Text(plan.metric), f"{best.value:.4f}")
        for name, value in best.params.items():
            summary.add_row(Text(name), Text(_fmt(value)))
        console.print(summary)
    stages = Table(title="stages")
    for column in ("stage", "budget", "complete", "pruned", "failed", "best", "ranges"):
        stages.add_column(column, justify="left" if column in ("budget", "ranges") else "right")
    for s in result.stages:
        ranges = "  ".join(f"{n} {p.describe()}" for n, p in s.space.items())
        stages.add_row(
            str(s.index + 1),
            s.stage.budget,
            str(s.complete),
            _pruned_text(s.pruned, s.prune_reasons),
            str(s.failed),
            "-" if s.best is None else f"{s.best.value:.4f}",
            Text(ranges),
        )
    console.print(stages)
    for s in result.stages:
        errors: dict[str, list[int]] = {}
        for t in result.trials:
            if stage_of(t) == s.index and ERROR_ATTR in t.user_attrs:
                errors.setdefault(t.user_attrs[ERROR_ATTR], []).append(t.number)
        for error, numbers in list(errors.items())[:FAILED_SHOWN]:
            shown = ", ".join(f"#{n}" for n in numbers[:FAILED_SHOWN])
            more = f" and {len(numbers) - FAILED_SHOWN} more" if len(numbers) > FAILED_SHOWN else ""
            where = f"stage {s.index + 1}, trial {shown}{more}"
            console.print(f"[bold red]failed[/] ({where}): {escape(error)}")
    for index, warning in result.warnings:
        console.print(
            f"[bold yellow]boundary warning[/] (stage {index + 1}): {escape(warning.message)}"
        )


def _pruned_text(count: int, reasons: dict[str, int]) -> str:
    if not count:
        return "0"
    return f"{count} (" + ", ".join(f"{n} {k}" for k, n in sorted(reasons.items())) + ")"


def _trial_dict(trial: FrozenTrial) -> dict[str, Any]:
    stage = stage_of(trial)
    return {
        "number": trial.number,
        "stage": None if stage is None else stage + 1,  # as on screen: the first stage is 1
        "state": trial.state.name,
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "last_reported": trial.intermediate_values[trial.last_step]
        if trial.last_step is not None
        else None,
        "params": trial.params,
        "steps": trial.user_attrs.get(STEPS_ATTR),
        "prune_reason": trial.user_attrs.get(PRUNE_REASON),
        "error": trial.user_attrs.get(ERROR_ATTR),
        "continues": trial.user_attrs.get(PARENT_ATTR),
        "retry_of": trial.system_attrs.get("failed_trial"),
    }


def result_dict(result: SearchResult, storage: str | None = None) -> dict[str, Any]:
    """search.json: the plan, the best trial, each stage (ranges, counts, warnings), trials.
    Stages are numbered from 1, as on screen and in search.html (the study's `stage` trial
    attribute is the 0-based index)."""
    best = result.best_trial
    return {
        "study": result.study.study_name,
        "storage": storage,
        "done": result.done,
        "given_up": result.given_up,
        "plan": result.plan.to_json(),
        "best": None if best is None else {**_trial_dict(best)},
        "warnings": [{"stage": i + 1, **w.to_dict()} for i, w in result.warnings],
        "stages": [
            {
                "stage": s.index + 1,
                **s.stage.to_dict(),
                "ranges": space_to_json(s.space),
                "complete": s.complete,
                "pruned": s.pruned,
                "prune_reasons": s.prune_reasons,
                "failed": s.failed,
                "given_up": s.given_up,
                "pending": s.pending,
                "best": None if s.best is None else s.best.number,
                "warnings": [w.to_dict() for w in s.warnings],
            }
            for s in result.stages
        ],
        "trials": [_trial_dict(t) for t in result.trials if stage_of(t) is not None],
    }


def write_report(result: SearchResult, out: Path | str, storage: str | None = None) -> list[Path]:
    """Write search.json and search.html to `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = result_dict(result, storage)
    json_path, html_path = out / "search.json", out / "search.html"
    write_json(json_path, data)
    write_atomic(html_path, html_page(result, storage))
    return [json_path, html_path]


# --- HTML ----------------------------------------------------------------------------------


def html_page(result: SearchResult, storage: str | None = None) -> str:
    """The self-contained search.html (matplotlib is imported here, not at start-up)."""
    from babysit.report.html import Section, escape, figure_png, image, page, table

    plan = result.plan
    best = result.best_trial
    sections = []
    overview = Section("Best configuration")
    if best is None:
        overview.add("<p>No trial completed yet.</p>")
    else:
        rows = [
            (plan.metric, round(best.value, 4)),
            *((k, _fmt(v)) for k, v in best.params.items()),
        ]
        overview.add(
            f"<p>Trial {best.number}, stage {stage_of(best) + 1} "
            f"({escape(plan.stages[stage_of(best)].budget)} of training).</p>"
        )
        overview.add(table(["hyperparameter", "value"], rows))
    sections.append(overview)
    warn = Section("Boundary warnings")
    if result.warnings:
        warn.add(
            "<ul>"
            + "".join(
                f'<li><span class="sev-warning">stage {i + 1}</span> {escape(w.message)}</li>'
                for i, w in result.warnings
            )
            + "</ul>"
        )
    else:
        warn.add(
            '<p><span class="pass">none</span> no best value sat at the edge of its range.</p>'
        )
    sections.append(warn)
    scatter = Section("Validation accuracy against the hyperparameters")
    numeric = [n for n, p in plan.space.items() if isinstance(p, Float | Int)]
    for name in numeric:
        scatter.add(
            image(
                figure_png(_scatter(result, name)),
                f"{plan.metric} against {name}",
                f"{plan.metric} of every trial against {name}, coloured by stage. Pruned trials: "
                f"x at their last reported value; diverged trials (3x loss or NaN): x below zero.",
            )
        )
    sections.append(scatter)
    ranges = Section("Range of each stage")
    if numeric:
        ranges.add(
            image(
                figure_png(_ranges_figure(result, numeric)),
                "ranges per stage",
                "The range each stage sampled; dots: the stage's best trial.",
            )
        )
    ranges.add(
        table(
            ["stage", "budget", "trials", "complete", "pruned", "failed", "best", *plan.space],
            [
                (
                    s.index + 1,
                    s.stage.budget,
                    s.stage.trials,
                    s.complete,
                    s.pruned,
                    s.failed,
                    "-" if s.best is None else round(s.best.value, 4),
                    *(p.describe() for p in s.space.values()),
                )
                for s in result.stages
            ],
        )
    )
    sections.append(ranges)
    trials = Section("Trials")
    trials.add(
        table(
            ["#", "stage", "state", plan.metric, "steps", *plan.space, "note"],
            [
                (
                    t.number,
                    (stage_of(t) or 0) + 1,
                    t.state.name.lower(),
                    "-" if _value(t) is None else round(_value(t), 4),
                    t.user_attrs.get(STEPS_ATTR, "-"),
                    *(_fmt(t.params.get(n, "")) for n in plan.space),
                    _note(t),
                )
                for t in result.trials
                if stage_of(t) is not None
            ],
        )
    )
    sections.append(trials)
    subtitle = f"study {result.study.study_name}" + (f" in {storage}" if storage else "")
    return page("babysit search", sections, subtitle=subtitle)


def _scatter(result: SearchResult, name: str):
    from babysit.report.html import new_figure

    plan = result.plan
    param = plan.space[name]
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    for index in range(len(plan.stages)):
        color = STAGE_COLORS[index % len(STAGE_COLORS)]
        mine = [t for t in result.trials if stage_of(t) == index and name in t.params]
        done = [t for t in mine if _value(t) is not None]
        pruned = [t for t in mine if t.state == TrialState.PRUNED]
        if done:
            ax.scatter(
                [t.params[name] for t in done],
                [t.value for t in done],
                s=22,
                color=color,
                label=f"stage {index + 1} ({plan.stages[index].budget})",
            )
        if pruned:
            ax.scatter(
                [t.params[name] for t in pruned],
                [_pruned_y(t) for t in pruned],
                s=22,
                marker="x",
                color=color,
                alpha=0.7,
            )
    if isinstance(param, Float | Int) and param.log:
        ax.set_xscale("log")
    ax.set_xlabel(plain_text(name) + (" (log scale)" if getattr(param, "log", False) else ""))
    ax.set_ylabel(plain_text(plan.metric))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a stage with a completed trial
        ax.legend(fontsize="small", loc="best")
    return fig


def _pruned_y(trial: FrozenTrial) -> float:
    """Where a pruned trial goes: its last reported value, or just below zero if it diverged
    before reporting any."""
    if trial.last_step is not None:
        value = trial.intermediate_values[trial.last_step]
        if math.isfinite(value):
            return value
    return -0.05


def _ranges_figure(result: SearchResult, names: Sequence[str]):
    from babysit.report.html import new_figure

    stages = result.stages
    fig = new_figure(7.5, 1.0 + 0.9 * len(names) * max(1, len(stages)) / 2)
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        param: Param = stages[0].space[name]
        for s in stages:
            p = s.space[name]
            color = STAGE_COLORS[s.index % len(STAGE_COLORS)]
            y = len(stages) - s.index
            ax.plot([p.low, p.high], [y, y], color=color, linewidth=6, solid_capstyle="butt")
            if s.best is not None and name in s.best.params:
                ax.plot([s.best.params[name]], [y], "o", color="black", markersize=4)
        ax.set_yticks(
            [len(stages) - s.index for s in stages], [f"stage {s.index + 1}" for s in stages]
        )
        ax.set_ylim(0.4, len(stages) + 0.6)
        if not isinstance(param, Categorical) and param.log:
            ax.set_xscale("log")
        ax.set_title(plain_text(name), fontsize="medium", loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    return fig
