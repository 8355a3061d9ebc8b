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
    rich_markup_mode="markdown",
    help="The CS231n recipe for training neural networks, as a checkup, a monitor and a search.",
)


def _version(value: bool) -> None:
    if value:
        from babysit._version import __version__

        typer.echo(f"babysit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """The CS231n recipe for training neural networks, as a checkup, a monitor and a search."""


# The commands register themselves on `app` when imported.
from babysit.cli import _doctor, _lab, _report, _search, _train  # noqa: E402, F401
from babysit.cli._common import _one_line  # noqa: E402, F401


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
