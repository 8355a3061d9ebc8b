"""`babysit search CONFIG`: the coarse-to-fine random search."""

from __future__ import annotations

from typing import Annotated

import typer

from babysit.cli import app


@app.command("search")
def search_command(
    config: Annotated[
        str, typer.Argument(help="Search config (.toml, .yaml): space, stages; see docs/search.md.")
    ],
    storage: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///FILE, journal:FILE or postgresql://USER:PASS@HOST/DB. Default: "
            "OUT/study.journal, for any number of --workers."
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(help="Study name. Default: the config's `study`, or its file name."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes on this machine, all on one study.")
    ] = 1,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the study if it exists (after Ctrl-C or kill -9), or join it from "
            "another machine; without it an existing study is refused.",
        ),
    ] = False,
    out: Annotated[
        str | None,
        typer.Option(
            help="Folder for the study file, search.json and search.html. Default: runs/STUDY."
        ),
    ] = None,
    live: Annotated[bool, typer.Option(help="Show the live table of trials on stderr.")] = True,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="torch threads per process (1 is fastest for small models on a CPU)."
        ),
    ] = 1,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            help="Folder for the checkpoints of trials a promoting stage continues; on "
            "several machines, one they all see. Default: OUT/checkpoints."
        ),
    ] = None,
) -> None:
    """Coarse-to-fine random search on Optuna: stages that narrow the ranges, the 3x loss abort,
    boundary warnings. Run the same command on each machine of a shared PostgreSQL study."""
    from pathlib import Path

    from babysit.report.terminal import stderr as console
    from babysit.search.config import default_out, load_config
    from babysit.search.report import LiveTrials
    from babysit.search.runner import quiet_optuna, run_search
    from babysit.search.storage import resolve_storage
    from babysit.search.study import SearchStopped, load_result

    quiet_optuna()
    cfg = load_config(config)
    name = study or cfg.study
    out = Path(out) if out is not None else default_out(name)
    spec = resolve_storage(storage, out, workers)
    resume_hint = (
        f"babysit search {config} --study {name} --resume"
        + (f" --storage {spec.display}" if storage else f" --out {out}")
        + (f" --workers {workers}" if workers > 1 else "")
    )

    started = _on_start(name, spec.display, cfg.plan, workers)
    view = LiveTrials(cfg.plan, name) if live else None
    stopped: SearchStopped | None = None
    try:
        if view:
            view.__enter__()
        result = run_search(
            cfg,
            spec,
            name,
            workers=workers,
            resume=resume,
            progress=view.update if view else None,
            on_start=started,
            threads=threads,
            checkpoints=Path(checkpoints) if checkpoints else out / "checkpoints",
        )
    except KeyboardInterrupt:
        console.print(
            f"interrupted: no completed trial is lost; continue with: {resume_hint}",
            markup=False,
            highlight=False,
        )
        raise
    except SearchStopped as e:
        stopped, result = e, load_result(e.study)
    finally:
        if view:
            view.__exit__(None, None, None)
    _finish(result, stopped, out, spec.display, resume_hint)


def _given_up_line(result) -> str:
    """Which trials the retry cap gave up, and what their stages are short of."""
    from babysit.search.storage import MAX_RETRIES

    short = [
        f"stage {s.index + 1} ran {s.stage.trials - len(s.given_up)} of its {s.stage.trials}"
        for s in result.stages
        if s.given_up
    ]
    numbers = ", ".join(f"#{n}" for n in result.given_up)
    return (
        f"babysit: trial {numbers} was interrupted {MAX_RETRIES + 1} times and given up "
        f"({'; '.join(short)} trials); the search is short of its budget"
    )


def _on_start(name: str, display: str, plan, workers: int):
    """The first line of a search: starting, resuming or joining the study, and the trials
    re-queued after an interruption."""
    from rich.markup import escape

    from babysit.report.terminal import stderr as console

    def started(opened, recovered: list[int], created: bool) -> None:
        finished = any(t.state.is_finished() for t in opened.get_trials(deepcopy=False))
        verb = "starting" if created else "resuming" if finished else "joining"
        console.print(
            f"{verb} study [bold]{escape(name)}[/] in {escape(display)}: "
            f"{plan.total_trials} trials in {len(plan.stages)} stages"
            + (f", {workers} workers" if workers > 1 else "")
        )
        if recovered:
            console.print(f"re-queued trials interrupted earlier: {recovered}", markup=False)

    return started


def _finish(result, stopped, out, display: str, resume_hint: str) -> None:
    """The summary and the report; exit 1 when the search stopped, gave a trial up or did
    not finish."""
    from rich.markup import escape

    from babysit.report.terminal import stderr as console
    from babysit.search.report import print_summary, write_report

    print_summary(result)
    paths = write_report(result, out, display)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False, highlight=False)
    if stopped is not None:
        console.print(
            f"babysit: the search stopped: {stopped}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    if result.given_up:
        console.print(_given_up_line(result), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if not result.done:
        console.print(
            f"[bold red]the search did not finish[/]; continue with: {escape(resume_hint)}"
        )
        raise typer.Exit(1)
