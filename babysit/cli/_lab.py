"""`babysit lab`: the lecture's experiments."""

from __future__ import annotations

from typing import Annotated

import typer

from babysit.cli import app


@app.command("lab")
def lab_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Experiments to run, by name (babysit lab --list names and describes "
            "them), or all (the default).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Folder for the HTML gallery (index.html) and one NAME.json per experiment; "
            "results of other experiments already there are kept."
        ),
    ] = None,
    scale: Annotated[
        str,
        typer.Option(
            help="small: about a minute each on a CPU; full: the papers' settings where "
            "feasible, on CUDA when present; tiny: seconds, a smoke test."
        ),
    ] = "small",
    seed: Annotated[
        int, typer.Option(min=0, help="First seed; experiments use a few from it.")
    ] = 0,
    list_: Annotated[
        bool, typer.Option("--list", help="Describe the experiments and run nothing.")
    ] = False,
) -> None:
    """The lecture's experiments, reproduced: each states its claims and sources, measures them
    and prints PASS/FAIL. Exit code 0 when every claim passes or is a documented known
    exception (marked "FAIL (known)"), 1 when another claim fails."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from babysit import lab
    from babysit.lab.gallery import claims_table, experiments_table, summary_table
    from babysit.report.terminal import stderr, stdout

    chosen = lab.resolve(names or ["all"])
    if list_:
        experiments_table([lab.EXPERIMENTS[n] for n in chosen], stdout)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
        console=stderr,
    )
    tasks: dict[str, int] = {}
    # Bars redraw in place on a terminal only; in a log or a pipe each stop would print them
    # all again, so there only the claims tables are printed.
    bars = stderr.is_terminal

    def advance(name: str, done: int, total: int, what: str) -> None:
        if not bars:
            return
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total, what="")
        progress.update(tasks[name], completed=done, total=total, what=what)

    def finished(result) -> None:
        if bars:
            progress.stop()
        claims_table(result, stdout)
        if bars:
            progress.start()

    with progress if bars else contextlib.nullcontext():
        results = lab.run(
            chosen, scale=scale, out=out, seed=seed, progress=advance, on_result=finished
        )
    if len(results) > 1:
        summary_table(results, stdout)
    if out is not None:
        from pathlib import Path

        stderr.print(
            f"gallery written to {Path(out) / 'index.html'}",
            markup=False,
            highlight=False,
            soft_wrap=True,  # a path to copy, on one line
        )
    if not all(r.ok for r in results):
        raise typer.Exit(1)
