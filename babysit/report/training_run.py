"""`babysit report RUN_DIR` for a training run: the findings of a saved Monitor history
(RUN_DIR/history.jsonl, from `mon.save_jsonl`, `babysit train --out` or the Lightning and
Hugging Face callbacks), as the checkup's Report, saved beside it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babysit.checks.training_run import check_training_run
from babysit.report.report import JSON_NAME, Report
from babysit.train.records import load_history

__all__ = ["HISTORY_NAME", "RUN_META_NAME", "RunReport", "run_report"]

HISTORY_NAME = "history.jsonl"
# Facts about the run beside the history (written by the integrations: ranks, optimizer).
RUN_META_NAME = "run.json"


class RunReport(Report):
    """The checkup's Report, about a training run: the same findings, JSON and terminal
    table; its HTML draws what the lecture draws (the loss per step and its smoothed curve,
    train and val accuracy, the update/weight ratio per layer over time with the 1e-3 band,
    activation histograms over time, the first layer's filters as images)."""

    def __init__(self, findings, measurements, meta, records: Sequence[dict[str, Any]] = ()):
        super().__init__(findings, measurements, meta)
        self.records = list(records)

    def render_html(self) -> tuple[str, dict[str, bytes]]:
        from babysit.report import html, run_plots

        run = self.measurements.get("training_run") or {}
        figures = html.Figures()
        figure = figures.add

        window = (run.get("loss") or {}).get("smoothing_window", 5)
        section = html.Section("The run")
        for name, fig, alt, caption in (
            (
                "run_loss.png",
                run_plots.loss_figure(self.records, window),
                "loss per step",
                "The loss of every step (grey) and its smoothed curve (blue). CS231n: too low a "
                "rate decreases linearly, too high drops fast and stalls or explodes, a wiggly "
                "curve means a small batch.",
            ),
            (
                "run_accuracy.png",
                run_plots.accuracy_figure(self.records),
                "accuracy",
                "Train and validation accuracy: a big gap is overfitting, no gap and low "
                "accuracy underfitting.",
            ),
            (
                "run_update_ratios.png",
                run_plots.update_ratio_over_time_figure(self.records),
                "update/weight ratios",
                "||dW|| / ||W|| per weight over the run, log scale; "
                "the band is a decade either side of 1e-3 (CS231n: around 1e-3 is healthy).",
            ),
            (
                "run_histograms.png",
                run_plots.histograms_over_time_figure(self.records),
                "activation histograms over time",
                "Each activation layer's output distribution at a few probe steps, darker later.",
            ),
            (
                "run_filters.png",
                run_plots.filters_figure(run.get("first_layer")),
                "first-layer filters",
                "The first layer's weights as images (CS231n: smooth, "
                "diverse filters in a well-trained net; noisy ones mean undertrained or "
                "too little regularization).",
            ),
        ):
            section.add(figure(name, fig, alt, caption))
        sections = [self._findings_section(html), section, self._meta_section(html)]
        counts = ", ".join(f"{n} {s}" for s, n in self.summary.items())
        return html.page("babysit: a training run", sections, counts), figures


def run_report(directory: str | os.PathLike) -> Report | None:
    """The Report of the run saved in `directory`, or None when it holds no history (or a
    checkup's report.json newer than it: that one is re-drawn as it is)."""
    folder = Path(directory).expanduser()
    history = folder / HISTORY_NAME
    if not history.is_file():
        return None
    saved = folder / JSON_NAME
    if saved.is_file() and _kind(saved) != "training_run":
        return None
    meta: dict[str, Any] = {"kind": "training_run", "source": str(history)}
    extra = folder / RUN_META_NAME
    if extra.is_file():
        # The history alone is enough: an unreadable run.json only loses the rank count.
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
            meta.update(json.loads(extra.read_text()))
    records = load_history(history)
    meta.setdefault("steps", records[-1]["step"] if records else 0)
    findings, measured = check_training_run(records, meta=meta)
    previous = _first_layer(saved) if saved.is_file() else None
    if previous is not None:
        measured["first_layer"] = previous  # the weights are not in the history
    return RunReport(findings, {"training_run": measured}, meta, records)


def _first_layer(path: Path) -> dict | None:
    try:
        run = json.loads(path.read_text())["measurements"]["training_run"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return run.get("first_layer") if isinstance(run, dict) else None


def _kind(path: Path) -> str | None:
    try:
        return (json.loads(path.read_text()).get("meta") or {}).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
