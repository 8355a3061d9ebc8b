"""Terminal output with rich: progress while training, summary tables at the end.

Progress goes to stderr, tables to stdout, so that `--json` output on stdout stays clean.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from babysit.train.callbacks import Callback
from babysit.train.loop import History, TrainState

__all__ = ["TrainProgress", "history_table", "stderr", "stdout"]

stdout = Console()
stderr = Console(stderr=True)

# Reading the loss for display costs a host sync on a GPU; once every this many steps is
# enough for a human to watch it.
PROGRESS_REFRESH_STEPS = 10


class TrainProgress(Callback):
    """Rich progress bars for `fit`: epochs, batches, and the latest loss and accuracy."""

    def __init__(self, epochs: int, console: Console = stderr):
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._epoch_task = None
        self._batch_task = None

    def on_train_begin(self, state: TrainState) -> None:
        self.progress.start()
        self._epoch_task = self.progress.add_task("epoch", total=self.epochs, info="")
        self._batch_task = self.progress.add_task("batch", total=None, info="")

    def on_epoch_begin(self, state: TrainState) -> None:
        self.progress.reset(self._batch_task, total=None, info="")

    def on_batch_end(self, state: TrainState, loss) -> None:
        self.progress.advance(self._batch_task)
        if state.step % PROGRESS_REFRESH_STEPS == 0:
            self.progress.update(self._batch_task, info=f"loss {float(loss):.4f}")

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        parts = [f"loss {metrics['train_loss']:.4f}"]
        if "train_accuracy" in metrics:
            parts.append(f"train acc {metrics['train_accuracy']:.3f}")
        if "val_accuracy" in metrics:
            parts.append(f"val acc {metrics['val_accuracy']:.3f}")
        self.progress.update(self._epoch_task, advance=1, info="  ".join(parts))

    def on_train_end(self, state: TrainState) -> None:
        self.progress.stop()


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def history_table(history: History, console: Console = stdout) -> None:
    """One row per epoch: losses, accuracies and the train/val gap; then the stop reason."""
    table = Table(title="training summary")
    for column in ("epoch", "train loss", "train acc", "val loss", "val acc", "gap"):
        table.add_column(column, justify="right")
    for record in history.epochs:
        train_acc, val_acc = record.get("train_accuracy"), record.get("val_accuracy")
        gap = None if train_acc is None or val_acc is None else train_acc - val_acc
        table.add_row(
            str(int(record["epoch"])),
            _fmt(record.get("train_loss")),
            _fmt(train_acc, 3),
            _fmt(record.get("val_loss")),
            _fmt(val_acc, 3),
            _fmt(gap, 3),
        )
    console.print(table)
    if history.stop_reason:
        console.print(f"[bold red]stopped early:[/] {escape(history.stop_reason)}")
