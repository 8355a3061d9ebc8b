"""Monitor records as TensorBoard event files, so that users see them in the tool they use.

Needs the `tensorboard` package (`pip install 'babysit[tensorboard]'`); torch's own
`SummaryWriter` writes the files. Tags: `loss` and every logged metric under its record
name (`train_accuracy`, `val_accuracy`, `gap`, `epoch`, ...); per layer
`activation_mean/<layer>`, `activation_std/<layer>`, `dead_fraction/<layer>`,
`saturated_fraction/<layer>`, `grad_std/<layer>` and the histogram `activations/<layer>`;
per parameter `update_ratio/<name>`; guard messages as the text `alerts`.
"""

from __future__ import annotations

import os
from typing import Any

from babysit.errors import UsageError

__all__ = ["TensorBoardLog", "check_log_dir"]

_LAYER_SCALARS = {
    "mean": "activation_mean",
    "std": "activation_std",
    "dead_fraction": "dead_fraction",
    "saturated_fraction": "saturated_fraction",
    "grad_std": "grad_std",
}
_NOT_SCALARS = frozenset(
    {"step", "layers", "update_ratios", "update_ratio_groups", "below_default_scale", "roles"}
    | {"alerts"}
)


def check_log_dir(log_dir: str | os.PathLike) -> type:
    """torch's SummaryWriter class, once tensorboard is known to be importable and `log_dir`
    usable; a one-line UsageError otherwise."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "writing TensorBoard files needs the tensorboard package, which is not "
            "installed; pip install 'babysit[tensorboard]' or leave log_dir unset"
        ) from None
    if os.path.isfile(log_dir):
        raise UsageError(f"TensorBoard log_dir {str(log_dir)!r} is a file; give a directory")
    return SummaryWriter


class TensorBoardLog:
    """Writes Monitor records to `log_dir` as scalars, histograms and text."""

    def __init__(self, log_dir: str | os.PathLike):
        self.writer = check_log_dir(log_dir)(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        self.write_scalars(step, {k: v for k, v in record.items() if k not in _NOT_SCALARS})
        for layer in record.get("layers", ()):
            name = layer["name"]
            for key, tag in _LAYER_SCALARS.items():
                if isinstance(layer.get(key), int | float):
                    self.writer.add_scalar(f"{tag}/{name}", layer[key], step)
            self._histogram(f"activations/{name}", layer, step)
        ratios = record.get("update_ratios", {}) | record.get("update_ratio_groups", {})
        for name, ratio in ratios.items():
            if ratio is not None:
                self.writer.add_scalar(f"update_ratio/{name}", ratio, step)
        for alert in record.get("alerts", ()):
            self.writer.add_text("alerts", alert["message"], step)

    def write_scalars(self, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def _histogram(self, tag: str, layer: dict[str, Any], step: int) -> None:
        """From the record's counts, without the raw values: TensorBoard wants the right
        edge of each bin, and the count, sum and sum of squares of the values."""
        counts = layer.get("histogram") or []
        count = sum(counts)
        if count == 0 or layer["mean"] is None or layer["std"] is None:
            return
        low, high = layer["histogram_range"]
        width = (high - low) / len(counts)
        mean, std = layer["mean"], layer["std"]
        self.writer.add_histogram_raw(
            tag,
            min=layer["min"],
            max=layer["max"],
            num=count,
            sum=mean * count,
            sum_squares=std * std * max(count - 1, 0) + count * mean * mean,
            bucket_limits=[low + width * (k + 1) for k in range(len(counts))],
            bucket_counts=counts,
            global_step=step,
        )

    def close(self) -> None:
        self.writer.close()
