"""`babysit train`: a plain training run under the Monitor."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from babysit.cli import app
from babysit.cli._common import (
    DataOption,
    ModelOption,
    SeedOption,
    _model,
    _one_line,
    _preprocessed,
    _saving,
    _write_json,
)
from babysit.errors import UsageError
from babysit.train.optimizers import optimizer_help


def _preflight(net, train_set, classes: int, batch_size: int) -> None:
    """One forward pass and one cross-entropy loss on one batch, in eval mode and without
    gradients (so the seeded run is unchanged), before training starts: a model that cannot
    train on this data is a one-line UsageError instead of a traceback from inside the loop."""
    import torch

    if not any(p.requires_grad for p in net.parameters()):
        raise UsageError(
            "the model has no trainable parameters, so there is nothing to train: give it "
            "layers with weights (nn.Linear, nn.Conv2d, ...) or unfreeze them (requires_grad)"
        )
    x, y = train_set.tensors[0][:batch_size], train_set.tensors[1][:batch_size]
    shape = f"inputs of shape {tuple(x.shape)}"
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            try:
                output = net(x)
            except Exception as e:
                raise UsageError(
                    f"the model's forward fails on {shape} ({_one_line(e)}): make it take "
                    f"(N, *input_shape) inputs and return (N, classes) scores"
                ) from None
            if not isinstance(output, torch.Tensor):
                raise UsageError(
                    f"the model returns a {type(output).__name__}, not a tensor: `babysit "
                    f"train` needs (N, {classes}) class scores (use babysit.checkup or your own "
                    f"loop for tuple or dict outputs)"
                )
            seen = f"{tuple(output.shape)} {str(output.dtype).removeprefix('torch.')}"
            if not output.is_floating_point():
                raise UsageError(
                    f"the model returns {seen} outputs, not floating-point scores: drop the "
                    f"rounding or argmax at the end of forward and return the logits"
                )
            if output.dim() != 2 or len(output) != len(x) or output.shape[1] < classes:
                raise UsageError(
                    f"the model returns outputs of shape {tuple(output.shape)} for {shape}, but "
                    f"cross-entropy on {classes} classes needs ({len(x)}, {classes}): "
                    f"give the last layer {classes} outputs and flatten anything else"
                )
            try:
                loss = torch.nn.functional.cross_entropy(output, y)
            except Exception as e:
                raise UsageError(
                    f"the loss fails on the model's {seen} outputs ({_one_line(e)}): return "
                    f"(N, {classes}) class scores"
                ) from None
            if loss.dim() != 0:
                raise UsageError(f"the loss is not a scalar (shape {tuple(loss.shape)})")
    finally:
        net.train(was_training)


@app.command()
def train(
    model: ModelOption = None,
    data: DataOption = "digits",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training set.")] = 10,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.05,
    optimizer: Annotated[
        str, typer.Option(help=f"One of: {optimizer_help()}.")
    ] = "momentum",
    weight_decay: Annotated[float, typer.Option(help="L2 regularization strength.")] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    preprocess: Annotated[
        str,
        typer.Option(
            help="Fit a transform on the training set and apply it to both splits: "
            "standardize, mean_image, per_channel_mean, zca, pca, or none (raw inputs: "
            "digits' 0..16 pixels make the default learning rate diverge)."
        ),
    ] = "standardize",
    seed: SeedOption = 0,
    monitor_every: Annotated[
        int | None,
        typer.Option(
            "--monitor-every",
            min=0,
            help="Probe every N steps: per-layer activation and gradient statistics and "
            "update/weight ratios (default: the Monitor's, every 10th step). 0 turns the "
            "Monitor off; the NaN and 3x-loss guards run either way.",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Directory to write history.jsonl (the Monitor's records, one per step) "
            "and metrics.json (per-epoch metrics, stop reason, alerts, settings) into.",
        ),
    ] = None,
    tensorboard: Annotated[
        str | None,
        typer.Option("--tensorboard", help="Also write TensorBoard event files to this directory."),
    ] = None,
) -> None:
    """Train a model with babysit's loop under the Monitor, with progress bars and a summary
    table. A NaN/inf loss or a loss above 3x the first one stops the run with exit code 1."""
    from pathlib import Path

    import torch

    from babysit._io import ensure_writable_dir
    from babysit.data import load_data
    from babysit.report.terminal import history_table
    from babysit.train import fit

    if monitor_every == 0 and tensorboard is not None:
        raise UsageError("--tensorboard writes the Monitor's records; drop --monitor-every 0")
    out_dir = Path(out) if out is not None else None
    for flag, folder in (("--out", out_dir), ("--tensorboard", tensorboard)):
        if folder is not None:  # before the work, not after it
            ensure_writable_dir(folder, flag)
    splits = load_data(data, seed=seed)
    train_set, val_set = _preprocessed(splits, preprocess)
    torch.manual_seed(seed)  # the model's initial weights, so that --seed repeats the run
    net = _model(model, splits.input_shape, splits.classes)
    _preflight(net, train_set, splits.classes, batch_size)
    callbacks, monitor = _callbacks(net, epochs, monitor_every, tensorboard)
    try:
        history = fit(
            net,
            train_set,
            val_set,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            callbacks=callbacks,
        )
    finally:
        if monitor is not None:
            monitor.detach()  # after an interrupt too: hooks off, TensorBoard files closed
            if out_dir is not None and monitor.steps:
                _saving(lambda: monitor.save_jsonl(out_dir / "history.jsonl"), out_dir)
    history_table(history)
    if out_dir is not None:
        settings = dict(
            model=model,
            data=data,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            weight_decay=weight_decay,
            batch_size=batch_size,
            preprocess=preprocess,
            seed=seed,
        )
        _save_metrics(out_dir, history, monitor, settings)
    if history.stopped:
        print(f"babysit: training stopped: {history.stop_reason}", file=sys.stderr)
        raise typer.Exit(1)


def _save_metrics(out_dir, history, monitor, settings: dict) -> None:
    """metrics.json: per-epoch metrics, the stop reason, the Monitor's alerts, the settings."""
    settings = {
        **settings,
        "monitor_every": None if monitor is None else monitor.every,
        "monitor_sample": None if monitor is None else monitor.sample,
    }
    metrics = {
        "epochs": history.epochs,
        "steps": len(history.step_loss),
        "stop_reason": history.stop_reason,
        "alerts": [] if monitor is None else monitor.alerts,
        "settings": settings,
    }
    _saving(lambda: _write_json(out_dir / "metrics.json", metrics), out_dir)


def _callbacks(net, epochs: int, monitor_every: int | None, tensorboard: str | None):
    """Progress bars, and the Monitor (or, with --monitor-every 0, only the 3x-loss abort)."""
    from babysit.report.terminal import TrainProgress
    from babysit.train import LossAbort, Monitor

    callbacks: list = [TrainProgress(epochs)]
    if monitor_every == 0:
        return [*callbacks, LossAbort(check_every=10)], None
    every = {} if monitor_every is None else {"every": monitor_every}
    monitor = Monitor(net, stop_on_abort=True, log_dir=tensorboard, **every)
    return [*callbacks, monitor], monitor
