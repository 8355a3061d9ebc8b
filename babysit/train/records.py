"""The Monitor's history: one record (a dict of host numbers) per step, as JSON Lines.

The schema is documented in `babysit.train.monitor` and docs/monitor.md. Non-finite numbers
are stored as null, so that every line is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import Tensor

from babysit._io import write_atomic
from babysit.errors import DataError
from babysit.probes import LayerStats

__all__ = ["LAYER_FIELDS", "RESERVED", "load_history", "save_history"]

# Keys the Monitor sets itself; `log` refuses them.
RESERVED = frozenset({"step", "loss", "layers", "update_ratios", "loop", "alerts", "gap"})
LAYER_FIELDS = tuple(f.name for f in fields(LayerStats))


def save_history(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write records as JSON Lines, atomically (a crash never leaves half a file)."""
    return write_atomic(Path(path), "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))


def load_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read the records a Monitor saved with `save_jsonl`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"history file {str(path)!r} does not exist")
    records = []
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number} is not a JSON line ({e.msg})") from None
            if not isinstance(record, dict) or "step" not in record:
                raise DataError(f"{path}:{number} is not a Monitor record (no 'step' field)")
            records.append(record)
    return records


def all_finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def host(value: Any) -> Any:
    """A metric as a JSON-ready host number (a device scalar is read back)."""
    if isinstance(value, Tensor):
        value = value.item()
    if isinstance(value, float):
        return finite_or_none(value)
    return value


def gap(record: dict[str, Any]) -> float | None:
    """train_accuracy - val_accuracy of a record that holds both (None if either is)."""
    train, val = record["train_accuracy"], record["val_accuracy"]
    return None if train is None or val is None else train - val
