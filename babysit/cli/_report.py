"""`babysit report DIR`: a saved checkup or training run, drawn again."""

from __future__ import annotations

from typing import Annotated

import typer

from babysit.cli import app
from babysit.cli._common import (
    _one_line,
)
from babysit.errors import UsageError


@app.command("report")
def report_command(
    directory: Annotated[
        str,
        typer.Argument(
            help="A folder written by `babysit doctor --out`, or a training run's folder "
            "holding history.jsonl (`babysit train --out`, mon.save_jsonl, the callbacks)."
        ),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout, no table.")
    ] = False,
) -> None:
    """Re-render report.html and its plots from DIR/report.json alone, and print the findings;
    for a training run's folder, read its history.jsonl and report on the run."""
    from babysit.report.report import Report
    from babysit.report.terminal import stderr, stdout
    from babysit.report.training_run import run_report

    report = run_report(directory)  # a training run's history.jsonl, if the folder has one
    if report is None:
        report = Report.load(directory)
    try:  # report.json came from outside: what cannot be drawn from it is bad input
        page = report.save(directory, write_json=report.meta.get("kind") == "training_run")
        if json_output:
            print(report.to_json())
        else:
            report.print(stdout)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError) as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(
            f"{directory}: report.json does not have the shape babysit writes ({_one_line(e)}): "
            f"write it again with `babysit doctor --out {directory}`"
        ) from None
    stderr.print(f"report written to {page}", markup=False, highlight=False)
