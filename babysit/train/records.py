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

from torch import Tensor, nn

from babysit._io import write_jsonl
from babysit.errors import DataError
from babysit.probes import LayerStats

__all__ = ["LAYER_FIELDS", "RESERVED", "first_layer_filters", "load_history", "save_history"]

# Keys the Monitor sets itself; `log` refuses them.
RESERVED = frozenset(
    {
        "step",
        "loss",
        "layers",
        "update_ratios",
        "update_ratio_groups",
        "below_default_scale",
        "roles",
        "loop",
        "alerts",
        "gap",
    }
)
LAYER_FIELDS = tuple(f.name for f in fields(LayerStats))
FIRST_LAYER_FILTERS = 32  # filters kept for the report's first-layer figure


def save_history(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write records as JSON Lines, atomically (a crash never leaves half a file): the
    Monitor's records are host numbers with non-finite values as None already."""
    return write_jsonl(path, records)


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


def first_layer_filters(model: nn.Module) -> dict[str, Any] | None:
    """The first weight layer's filters as nested lists (out, channels, height, width), for
    drawing as images: a Conv2d over 1 or 3 channels, or a Linear over a square image
    (k*k or 3*k*k inputs); None otherwise."""
    layer = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    if layer is None:
        return None
    weight = layer.weight.detach().float().cpu()
    if isinstance(layer, nn.Conv2d):
        if weight.shape[1] not in (1, 3):
            return None
        filters = weight
    else:
        inputs = weight.shape[1]
        channels = 3 if inputs % 3 == 0 and _square(inputs // 3) else 1
        side = _square(inputs // channels)
        if side is None:
            return None
        filters = weight.reshape(-1, channels, side, side)
    return {"kind": type(layer).__name__, "filters": filters[:FIRST_LAYER_FILTERS].tolist()}


def _square(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n and side > 1 else None
