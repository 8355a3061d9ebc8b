"""Options and helpers shared by the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from babysit.data.datasets import specs_help
from babysit.errors import UsageError

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="MODULE:FUNCTION or FILE.py:FUNCTION returning an nn.Module; it is given "
        "input_shape and the number of classes under the name it takes (classes, "
        "num_classes, vocab_size, num_labels, ...). Default: a 2x100 ReLU MLP.",
    ),
]


DataOption = Annotated[
    str,
    typer.Option("--data", help=f"The data set, one of: {specs_help()}."),
]


SeedOption = Annotated[int, typer.Option("--seed", help="Seed for everything random.")]


def _model(spec: str | None, input_shape, classes: int):
    """The default model, or the one `--model` names; whatever its builder raises (a bug, a
    missing argument, a syntax error, a class with other parameters) is one UsageError."""
    import inspect

    from babysit.nn import default_model, from_spec
    from babysit.nn.models import load_function

    if spec is None:
        return default_model(input_shape, classes)
    try:
        builder = load_function(spec)
        return from_spec(spec, input_shape, classes)
    except UsageError as e:
        if not str(e).startswith(spec):
            raise
        hint = ""
        if inspect.isclass(locals().get("builder")):
            hint = (
                "; it names a class: write a function that builds the module, e.g. "
                "def model(input_shape, classes): ..."
            )
        raise UsageError(f"--model {e}{hint}") from None
    except Exception as e:
        hint = (
            "make it return an nn.Module; it may take input_shape and the number of classes "
            "(as classes, num_classes, vocab_size, ...)"
        )
        if inspect.isclass(locals().get("builder")):
            hint = (
                "it names a class, called as CLASS(input_shape, classes): write a function "
                "that builds the module, e.g. def model(input_shape, classes): ..."
            )
        raise UsageError(
            f"--model {spec} failed to build the model ({_one_line(e)}): {hint}"
        ) from None


def _one_line(error: BaseException, limit: int = 200) -> str:
    """`Type: message` on one line, cut to `limit` characters."""
    text = " ".join(str(error).split()) or "no message"
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}"


def _saving(write, folder) -> None:
    """Run `write`; a disk that fills up or turns read-only during the run is one line."""
    try:
        write()
    except OSError as e:
        raise UsageError(
            f"cannot write into {str(folder)!r} ({e.strerror or e}): free some space or "
            f"choose another --out"
        ) from None


def _write_json(path, value) -> None:
    """Write `value` as strict JSON (NaN and inf as null) via a temporary file and a rename,
    so that a crash never leaves half a file."""
    from babysit._io import write_json

    write_json(path, value)


def _preprocessed(splits, preprocess: str):
    """Fit `--preprocess` on the training inputs, apply it to train and val ("none": as is)."""
    from babysit.data.preprocess import fit_apply

    return fit_apply(None if preprocess == "none" else preprocess, *splits)
