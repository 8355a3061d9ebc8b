"""The `babysit` command: doctor | train | search | lab | report.

Exit codes: 0 fine, 1 the checkup found an `error` (doctor) or a run failed its goal,
2 bad usage or input (a one-line message on stderr, no traceback), 130 interrupted.
Progress and tables go to stderr and stdout respectively; with --json stdout is JSON only.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from babysit.errors import UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="The CS231n recipe for training neural networks, as a checkup, a monitor and a search.",
)

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="MODULE:FUNCTION or FILE.py:FUNCTION returning an nn.Module (it may take "
        "input_shape and classes). Default: a 2x100 ReLU MLP.",
    ),
]
DataOption = Annotated[
    str,
    typer.Option(
        "--data", help="digits (bundled), cifar10:DIR, npz:FILE or synthetic:n=...,shape=..."
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for everything random.")]


def _version(value: bool) -> None:
    if value:
        from babysit import __version__

        typer.echo(f"babysit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """The CS231n recipe for training neural networks, as a checkup, a monitor and a search."""


def _model(spec: str | None, input_shape, classes: int):
    from babysit.nn import default_model, from_spec

    return (
        default_model(input_shape, classes)
        if spec is None
        else from_spec(spec, input_shape, classes)
    )


@app.command()
def train(
    model: ModelOption = None,
    data: DataOption = "digits",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training set.")] = 10,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.05,
    optimizer: Annotated[
        str, typer.Option(help="sgd, momentum, nesterov, adam, adamw or rmsprop.")
    ] = "momentum",
    weight_decay: Annotated[float, typer.Option(help="L2 regularization strength.")] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    preprocess: Annotated[
        str | None,
        typer.Option(
            help="Fit a transform on the training set and apply it to both splits: "
            "standardize, mean_image, per_channel_mean, zca or pca."
        ),
    ] = None,
    seed: SeedOption = 0,
) -> None:
    """Train a model with babysit's loop, with progress bars and a summary table."""
    from babysit.data import load_data
    from babysit.report.terminal import TrainProgress, history_table
    from babysit.train import LossAbort, fit

    splits = load_data(data, seed=seed)
    train_set, val_set = _preprocessed(splits, preprocess)
    net = _model(model, splits.input_shape, splits.classes)
    progress = TrainProgress(epochs)
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
        callbacks=[progress, LossAbort(check_every=10)],
    )
    history_table(history)
    if history.stopped:
        raise typer.Exit(1)


def _preprocessed(splits, preprocess: str | None):
    """Fit the named transform on the training inputs, apply it to train and val."""
    train_set, val_set = splits
    if preprocess is None:
        return train_set, val_set
    from torch.utils.data import TensorDataset

    from babysit.data import preprocess as pre

    transforms = {
        "standardize": pre.Standardize,
        "mean_image": pre.MeanImage,
        "per_channel_mean": pre.PerChannelMean,
        "zca": lambda: pre.Whiten(kind="zca"),
        "pca": lambda: pre.Whiten(kind="pca"),
    }
    if preprocess not in transforms:
        raise UsageError(
            f"unknown preprocessing {preprocess!r}; choose one of {', '.join(transforms)}"
        )
    transform = transforms[preprocess]().fit(train_set.tensors[0])

    def apply(ds):
        return (
            None if ds is None else TensorDataset(transform.transform(ds.tensors[0]), ds.tensors[1])
        )

    return apply(train_set), apply(val_set)


# [doctor command: added by the checkup work]

# [search command: added by the search work]

# [lab command: added by the lab work]

# [report command: added by the checkup work]


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; input errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="babysit")  # standalone: usage errors exit 2 by themselves
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UsageError as e:
        print(f"babysit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("babysit: interrupted", file=sys.stderr)
        return 130
    return 0
