"""`babysit report RUN_DIR` for a training run: the findings of a saved Monitor history
(RUN_DIR/history.jsonl, from `mon.save_jsonl`, `babysit train --out` or the Lightning and
Hugging Face callbacks), as the checkup's Report, saved beside it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from babysit.checks.training_run import check_training_run
from babysit.report.report import JSON_NAME, Report
from babysit.train.records import load_history

__all__ = ["HISTORY_NAME", "RUN_META_NAME", "run_report"]

HISTORY_NAME = "history.jsonl"
# Facts about the run beside the history (written by the integrations: ranks, optimizer).
RUN_META_NAME = "run.json"


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
    return Report(findings, {"training_run": measured}, meta)


def _kind(path: Path) -> str | None:
    try:
        return (json.loads(path.read_text()).get("meta") or {}).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
