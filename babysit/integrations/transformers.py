"""`MonitorCallback` for the Hugging Face `Trainer`: the Monitor on `trainer.train()`.

    from babysit.integrations.transformers import MonitorCallback
    trainer = Trainer(model=model, args=args, train_dataset=..., callbacks=[MonitorCallback()])
    trainer.train()
    # args.output_dir now holds history.jsonl, run.json, report.json and report.html

The Trainer's callbacks see no per-batch loss, so the callback reads it where the model
returns it (`outputs.loss`, from a forward hook on the model) and records one step per
optimizer step (`on_step_end`: the mean loss of its micro-batches, so with
`gradient_accumulation_steps` too). The accuracies come from the evaluation metrics
(`eval_accuracy`, from your `compute_metrics`). Written by the main process only.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "babysit.integrations.transformers needs transformers and accelerate: "
        "pip install 'babysit[transformers]'"
    ) from None

import torch
from torch import Tensor, nn

from babysit.integrations._run import accuracy_metrics, write_run
from babysit.train.monitor import DEFAULT_EVERY, Monitor

__all__ = ["MonitorCallback"]

_ACCURACIES = {
    "train_accuracy": ("train_accuracy",),
    "val_accuracy": ("eval_accuracy", "eval_acc", "val_accuracy"),
}


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside Accelerate's (or DeepSpeed's) wrapper."""
    while optimizer is not None and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _loss_of(output: Any) -> Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if loss is None and isinstance(output, tuple | list) and output:
        loss = output[0] if isinstance(output[0], Tensor) and output[0].dim() == 0 else None
    return loss if isinstance(loss, Tensor) and loss.numel() == 1 else None


class MonitorCallback(TrainerCallback):
    """Watch `Trainer.train` with a babysit Monitor; `monitor_kwargs` go to `Monitor`.
    `dirpath` overrides where the run is written (default: `args.output_dir`). After
    training, `.monitor` and `.report` hold the Monitor and the run's Report."""

    def __init__(
        self, every: int = DEFAULT_EVERY, dirpath: str | os.PathLike | None = None, **monitor_kwargs
    ):
        self.every = every
        self.dirpath = dirpath
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Monitor | None = None
        self.report = None
        self._losses: list[Tensor] = []
        self._handle = None

    def on_train_begin(self, args, state, control, model: nn.Module = None, **kwargs) -> None:
        optimizer = _torch_optimizer(kwargs.get("optimizer"))
        self.monitor = Monitor(model, optimizer, every=self.every, **self.monitor_kwargs)
        self.monitor.attach()
        self._handle = model.register_forward_hook(self._on_output)

    def _on_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled() and module.training:
            loss = _loss_of(output)
            if loss is not None:
                self._losses.append(loss.detach())

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self.monitor is None or not self._losses:
            return
        losses, self._losses = self._losses, []
        self.monitor.step(torch.stack(losses).float().mean())

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        if self.monitor is None or self.monitor.steps == 0:
            return
        found = accuracy_metrics(dict(metrics or {}), _ACCURACIES)
        epoch = state.epoch
        self.monitor.log(**found, **({} if epoch is None else {"epoch": float(epoch)}))

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if self.monitor is None:
            return
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.monitor.detach()
        meta = {"integration": "transformers", "ranks": args.world_size}
        if state.is_world_process_zero:
            self.report = write_run(self.monitor, self.dirpath or args.output_dir, **meta)
        else:
            self.report = self.monitor.report(**meta)
