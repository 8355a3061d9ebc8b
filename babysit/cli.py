"""The `babysit` command: doctor | train | search | lab | report.

Exit codes: 0 fine, 1 the checkup found an `error` (doctor) or a run failed its goal,
2 bad usage or input (a one-line message on stderr, no traceback), 130 interrupted.
Progress and tables go to stderr and stdout respectively; with --json stdout is JSON only.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from babysit.data.datasets import specs_help
from babysit.errors import UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    help="The CS231n recipe for training neural networks, as a checkup, a monitor and a search.",
)

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
        str, typer.Option(help="sgd, momentum, nesterov, adam, adamw or rmsprop.")
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
    from babysit.report.terminal import TrainProgress, history_table
    from babysit.train import LossAbort, Monitor, fit

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
    callbacks: list = [TrainProgress(epochs)]
    monitor = None
    if monitor_every == 0:
        callbacks.append(LossAbort(check_every=10))
    else:
        every = {} if monitor_every is None else {"every": monitor_every}
        monitor = Monitor(net, stop_on_abort=True, log_dir=tensorboard, **every)
        callbacks.append(monitor)
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
            monitor_every=None if monitor is None else monitor.every,
            monitor_sample=None if monitor is None else monitor.sample,
        )
        metrics = {
            "epochs": history.epochs,
            "steps": len(history.step_loss),
            "stop_reason": history.stop_reason,
            "alerts": [] if monitor is None else monitor.alerts,
            "settings": settings,
        }
        _saving(lambda: _write_json(out_dir / "metrics.json", metrics), out_dir)
    if history.stopped:
        print(f"babysit: training stopped: {history.stop_reason}", file=sys.stderr)
        raise typer.Exit(1)


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
            help="The optimizer you will train with: sgd, momentum, nesterov, adam, "
            "adamw or rmsprop."
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

    from rich.markup import escape

    from babysit.report.terminal import stderr as console
    from babysit.search.config import default_out, load_config
    from babysit.search.report import LiveTrials, print_summary, write_report
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

    def started(opened, recovered: list[int], created: bool) -> None:
        finished = any(t.state.is_finished() for t in opened.get_trials(deepcopy=False))
        verb = "starting" if created else "resuming" if finished else "joining"
        console.print(
            f"{verb} study [bold]{escape(name)}[/] in {escape(spec.display)}: "
            f"{cfg.plan.total_trials} trials in {len(cfg.plan.stages)} stages"
            + (f", {workers} workers" if workers > 1 else "")
        )
        if recovered:
            console.print(f"re-queued trials interrupted earlier: {recovered}", markup=False)

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
    print_summary(result)
    paths = write_report(result, out, spec.display)
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
