"""What both callbacks do at the end of a run: write the history, the run's facts and its
report into one folder (what `babysit report RUN_DIR` reads back)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from babysit._io import write_json
from babysit.report.training_run import HISTORY_NAME, RUN_META_NAME
from babysit.train.monitor import Monitor

__all__ = ["accuracy_metrics", "write_run"]


def write_run(monitor: Monitor, directory: str | os.PathLike, **meta: Any):
    """Save `monitor`'s history, `meta` and its report into `directory`; return the Report."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    monitor.save_jsonl(folder / HISTORY_NAME)
    report = monitor.report(**meta)
    write_json(folder / RUN_META_NAME, report.meta, indent=None)
    report.save(folder)
    return report


def accuracy_metrics(metrics: dict[str, Any], names: dict[str, tuple[str, ...]]) -> dict:
    """The accuracies among a library's logged metrics, under the Monitor's names
    (`names`: Monitor key -> the library's usual keys), as floats in [0, 1]."""
    found = {}
    for key, candidates in names.items():
        for candidate in candidates:
            value = metrics.get(candidate)
            if value is None:
                continue
            value = float(value.item() if hasattr(value, "item") else value)
            if 0 <= value <= 1:
                found[key] = value
                break
    return found
