"""`MonitorCallback` for PyTorch Lightning 2.x: the Monitor on a LightningModule's training.

    from babysit.integrations.lightning import MonitorCallback
    trainer = Trainer(max_epochs=5, callbacks=[MonitorCallback()])
    trainer.fit(module, train_loader, val_loader)
    # trainer.log_dir now holds history.jsonl, run.json, report.json and report.html

It records every training batch's loss (`on_train_batch_end`), the update ratios of the
optimizer's steps (with `accumulate_grad_batches` too: they are counted in optimizer steps),
the accuracies the module logs as `train_acc`/`train_accuracy` and `val_acc`/`val_accuracy`,
and at the end writes the history and the run's report to the logger's directory (rank 0
only under DDP). Works with `lightning.pytorch` or the older `pytorch_lightning` package.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on which package is installed
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError(
            "babysit.integrations.lightning needs PyTorch Lightning 2.x: "
            "pip install 'babysit[lightning]'"
        ) from None

from torch import Tensor

from babysit.integrations._run import accuracy_metrics, write_run
from babysit.train.monitor import DEFAULT_EVERY, Monitor

__all__ = ["MonitorCallback"]

_ACCURACIES = {
    "train_accuracy": ("train_accuracy", "train_acc", "train_acc_epoch"),
    "val_accuracy": ("val_accuracy", "val_acc", "val_acc_epoch"),
}


class MonitorCallback(pl.Callback):
    """Watch `trainer.fit` with a babysit Monitor; `monitor_kwargs` go to `Monitor` (every,
    sample, layers, ...). `dirpath` overrides where the run is written (default: the
    logger's directory, else the trainer's default_root_dir). After fit, `.monitor` and
    `.report` hold the Monitor and the run's Report."""

    def __init__(
        self, every: int = DEFAULT_EVERY, dirpath: str | os.PathLike | None = None, **monitor_kwargs
    ):
        super().__init__()
        self.every = every
        self.dirpath = dirpath
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Monitor | None = None
        self.report = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        optimizers = list(trainer.optimizers)
        optimizer = optimizers[0] if len(optimizers) == 1 else None
        self.monitor = Monitor(pl_module, optimizer, every=self.every, **self.monitor_kwargs)
        self.monitor.attach()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.monitor is not None and isinstance(loss, Tensor):
            self.monitor.step(loss.detach())

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None or self.monitor.steps == 0:
            return
        metrics = accuracy_metrics(dict(trainer.callback_metrics), _ACCURACIES)
        self.monitor.log(epoch=trainer.current_epoch + 1, **metrics)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None:
            return
        self.monitor.detach()
        directory = self.dirpath or trainer.log_dir or trainer.default_root_dir
        meta = {"integration": "lightning", "ranks": trainer.world_size}
        if trainer.is_global_zero:
            self.report = write_run(self.monitor, directory, **meta)
        else:
            self.report = self.monitor.report(**meta)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.detach()
