"""`babysit doctor`: the checkup on a model and data named on the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from babysit.cli import app
from babysit.cli._common import (
    DataOption,
    ModelOption,
    SeedOption,
    _model,
    _preprocessed,
)
from babysit.errors import UsageError
from babysit.train.optimizers import optimizer_help

DOCTOR_LOSSES = ("cross_entropy", "bce", "mse")


def _doctor_targets(loss: str, splits, train_set, val_set):
    """The loss, the number of model outputs, and the splits with targets in the form that
    loss takes: class indices for cross_entropy; for bce one 0/1 column with 2 classes, else
    one-hot rows (one sigmoid per class); one-hot rows for mse."""
    from torch import nn
    from torch.utils.data import TensorDataset

    if loss not in DOCTOR_LOSSES:
        raise UsageError(f"unknown loss {loss!r}; choose one of {', '.join(DOCTOR_LOSSES)}")
    classes = splits.classes
    if loss == "cross_entropy":
        return nn.CrossEntropyLoss(), classes, train_set, val_set
    single = loss == "bce" and classes == 2

    def encode(ds):
        if ds is None:
            return None
        x, y = ds.tensors
        if y.is_floating_point() or (y.numel() and (y.min() < 0 or y.max() >= classes)):
            return ds  # leave labels the checkup will flag as they are
        target = y.float()[:, None] if single else nn.functional.one_hot(y, classes).float()
        return TensorDataset(x, target)

    loss_fn = nn.BCEWithLogitsLoss() if loss == "bce" else nn.MSELoss()
    return loss_fn, 1 if single else classes, encode(train_set), encode(val_set)


@app.command()
def doctor(
    model: ModelOption = None,
    data: DataOption = "digits",
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate to judge. Default: find one with a range test."),
    ] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            help=f"The optimizer you will train with: {optimizer_help()}."
        ),
    ] = "sgd",
    loss: Annotated[
        str, typer.Option(help="cross_entropy (class labels), bce or mse (one-hot targets).")
    ] = "cross_entropy",
    preprocess: Annotated[
        str | None,
        typer.Option(
            help="Fit a transform on the training set first: standardize, mean_image, "
            "per_channel_mean, zca, pca, or none (the default: check the data as it is)."
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick/--full",
            help="--full adds a short real training run judged for over/underfitting.",
        ),
    ] = True,
    out: Annotated[
        str | None,
        typer.Option(help="Folder for report.json, a self-contained report.html and plots."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout, no table.")
    ] = False,
    seed: SeedOption = 0,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="torch threads while checking (1 is fastest for the checkup's small steps).",
        ),
    ] = 1,
) -> None:
    """Check a model and data before training: what is wrong, with numbers and a fix.

    Exit code 0 when no finding is an error, 1 when one is, 2 for bad usage or input.
    """
    import torch

    from babysit._io import ensure_writable_dir
    from babysit.data import load_data
    from babysit.doctor import checkup
    from babysit.report.terminal import stderr, stdout

    if out is not None:
        ensure_writable_dir(out)  # before the checkup, not after it
    splits = load_data(data, seed=seed, validate=False)  # NaN and bad labels become findings
    train_set, val_set = _preprocessed(splits, preprocess)
    loss_fn, outputs, train_set, val_set = _doctor_targets(loss, splits, train_set, val_set)
    torch.manual_seed(seed)  # the model's initial weights, so that --seed repeats the checkup
    net = _model(model, splits.input_shape, outputs)
    report = checkup(
        net,
        train_set,
        val_data=val_set,
        loss_fn=loss_fn,
        lr=lr,
        optimizer=optimizer,
        quick=quick,
        seed=seed,
        progress=not json_output and stderr.is_terminal,  # a bar in a log is a stray line
        threads=threads,
    )
    report.meta["model"] = f"{model or 'default MLP (2x100 ReLU, He)'}: {report.meta['model']}"
    report.meta["data"] = data + (f" ({preprocess})" if preprocess not in (None, "none") else "")
    saved = None
    if out is not None:
        try:
            saved = report.save(out)
        except (OSError, UsageError) as e:  # the findings are still shown, then exit 2
            saved = e
    if json_output:
        print(report.to_json())
    else:
        report.print(stdout)
    if isinstance(saved, BaseException):
        detail = saved.strerror if isinstance(saved, OSError) else saved
        raise UsageError(f"the report could not be saved into {out!r} ({detail})")
    if saved is not None:
        stderr.print(f"report written to {saved}", markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)
