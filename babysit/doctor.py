"""`babysit.checkup(model, data)`: the CS231n babysitting recipe as one call, before a day of
training is wasted. It runs the checks of babysit.checks.registry in order, and a failing
check never stops the rest:

1. data audit: NaN inputs, labels the loss cannot use, un-centred or un-scaled inputs;
2. architecture audit: hidden sigmoids, squashed logits, stacked linear maps, depth without
   normalization, frozen parameters;
3. target audit: targets that only broadcast against the outputs, regression targets far
   from unit scale;
4. init audit: activations and gradients across depth at init, saturation, dead units,
   symmetric weights;
5. the initial loss against ln(C);
6. overfitting ~20 examples with regularization off;
7. whether the labels can be learnt at all;
8. regularization raises the loss;
9. the learning-rate range test;
10. a short run at the given or suggested rate (the update/weight ratio per layer), and the
    suggestion;
11. parameters that get no gradient or never change, over a few steps at that rate;
12. with quick=False and validation data, a short real run judged for over/underfitting.

The user's model is never modified: training happens on deep copies and measurements
restore the model's mode, buffers and gradients. Torch's global RNG state is restored too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from babysit._validation import check_scalar
from babysit.checks.base import Check, Context, draw, one_line
from babysit.checks.findings import Finding
from babysit.checks.plan import Plan, UnitMeter, make_plan, measure_step
from babysit.checks.registry import CHECKUP
from babysit.checks.runs import device_of
from babysit.checks.task import task_for
from babysit.data.batches import (
    Forward,
    Inputs,
    describe,
    finite_examples,
    select,
    to_device,
)
from babysit.errors import UsageError
from babysit.probes.trace import Trace, trace
from babysit.report.report import Report
from babysit.train import OPTIMIZERS

__all__ = ["Budget", "checkup"]


# The checkup runs many small training steps, where torch's intra-op threads cost more than
# they gain: on 2 cores under load the default `babysit doctor` took 16 s with 1 thread and
# 54 s with 2 (bench/doctor_time.py); on an idle machine the two are equal. One thread never
# loses.
CHECKUP_THREADS = 1


@dataclass(frozen=True)
class Budget:
    """How much work each step may do. The defaults keep `babysit doctor` on digits within
    ~10 s of CPU; tests pass smaller ones. Steps are optimizer steps.

    `epochs` is the time allowance: when these steps would cost more than `epochs` epochs
    of plain training of the model on the data (measured as the time of one training step
    at `batch_size`) and more than `min_seconds`, the checkup scales them down to fit
    (babysit.checks.plan); None never scales."""

    audit_examples: int = 512  # one batch for the init statistics, initial loss and trace
    max_examples: int = 4096  # the sample the training checks draw from
    overfit_steps: int = 300  # per learning rate tried
    reg_steps: int = 50
    learnable_steps: int = 150
    range_steps: int = 100
    lr_steps: int = 100
    full_epochs: int = 20
    full_min_steps: int = 500
    full_max_steps: int = 3000
    batch_size: int = 64
    epochs: float | None = 2.0
    min_seconds: float = 30.0


class _Progress:
    """A rich progress bar on stderr (or nothing): the step running, and the time left,
    estimated over the plan's work in units of one training step (babysit.checks.plan), so
    that a check of 100 steps weighs 100 times one of one step."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.done = 0.0  # planned units of the checks finished
        self.planned: dict[str, float] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]checkup[/]"),
                BarColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task("measuring one training step", total=None)

    def plan(self, planned: dict[str, float]) -> None:
        """The work of each check, by key, in step units: the bar's total."""
        self.planned = planned
        if self.bar is not None:
            self.bar.update(self.task, total=max(sum(planned.values()), 1.0), completed=0)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def begin(self, name: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=name)

    def used(self, key: str, units: float) -> None:
        """`units` of work done inside the check `key`: the bar moves within its share."""
        if self.bar is not None and self.planned:
            inside = min(units, self.planned.get(key, 0.0))
            self.bar.update(self.task, completed=self.done + inside)

    def end(self, key: str) -> None:
        self.done += self.planned.get(key, 0.0)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)


def _validate(model: object, optimizer: str, lr: float | None, seed: object) -> None:
    if not isinstance(model, nn.Module):
        raise UsageError(f"checkup needs a torch.nn.Module, got {type(model).__name__}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    check_scalar(
        lr,
        "lr",
        float,
        min=0,
        include_min=False,
        allow_none=True,
        expected="a positive number or None (find one)",
    )
    check_scalar(seed, "seed", int)


def _probe(model: nn.Module, x: Inputs, forward: Forward | None, what: str) -> Trace:
    """One forward pass with the trace hooks; a model that fails on the data is bad input."""
    try:
        return trace(model, x, forward)
    except UsageError:
        raise
    except Exception as e:
        how = "forward(model, inputs)" if forward is not None else "the model"
        raise UsageError(
            f"{how} fails on a batch of {what} (inputs {describe(x)}): {one_line(e)}: check "
            f"that the model matches the data's shape"
            + ("" if forward is not None else ", or pass forward=... to say how to call it")
        ) from None


def _describe_model(model: nn.Module) -> str:
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({params:,} parameters)"


def checkup(
    model: nn.Module,
    data: Dataset | DataLoader | tuple[Inputs, Tensor],
    *,
    val_data: Dataset | DataLoader | tuple[Inputs, Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    forward: Forward | None = None,
    lr: float | None = None,
    optimizer: str = "sgd",
    quick: bool = True,
    seed: int = 0,
    budget: Budget | None = None,
    progress: bool = False,
    threads: int | None = CHECKUP_THREADS,
) -> Report:
    """Check `model` on `data` (a Dataset or DataLoader of (inputs, target) examples, or an
    (inputs, targets) pair) before training. Inputs may be tensors, tuples (`model(*x)`) or
    dicts (`model(**x)`); the model's scores are its output, a tuple's first element or a
    dict's/`ModelOutput`'s `logits`. `forward(model, inputs) -> scores` replaces that call
    where it differs (e.g. `lambda model, x: model(**x).logits[:, -1]`).

    `loss_fn` defaults to cross-entropy on class labels; BCE, NLL and regression losses are
    recognised and the checks adapt, others make the label checks step aside. `lr=None`
    finds one with the range test; a given `lr` is judged. `optimizer` names the one you
    will train with (sgd, momentum, nesterov, adam, adamw, rmsprop). `quick=False` with
    `val_data` adds a short real training run. `threads` sets torch's intra-op threads while
    the checkup runs (restored after; None leaves them). Raises UsageError for unusable
    input (a model that fails on the data, a loss that fails on its output); everything the
    checks find is in the returned Report.
    """
    _validate(model, optimizer, lr, seed)
    if forward is not None and not callable(forward):
        raise UsageError(
            f"forward must be a function forward(model, inputs) -> scores, got "
            f"{type(forward).__name__}"
        )
    check_scalar(threads, "threads", int, min=1, allow_none=True)
    budget = budget or Budget()
    started = time.perf_counter()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        task = task_for(loss_fn, forward)
        report = _checkup(
            model, data, val_data, task, lr, optimizer, quick, seed, budget, progress, devices
        )
    finally:
        torch.set_num_threads(saved_threads)
    report.meta["duration_s"] = time.perf_counter() - started
    report.meta["threads"] = threads or saved_threads
    return report


def _examples(data: object, whole: tuple[Inputs, Tensor] | None) -> int | None:
    """How many examples `data` holds (None for an iterable data set of unknown length)."""
    if whole is not None:
        return len(whole[1])
    if isinstance(data, DataLoader):
        data = data.dataset
    return len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]


def _checkup(model, data, val_data, task, lr, optimizer, quick, seed, budget, progress, devices):
    with torch.random.fork_rng(devices=devices), _Progress(progress) as bar:
        torch.manual_seed(seed)
        x_all, y_all, index, whole = draw(data, "data", budget.max_examples, seed)
        n = _examples(data, whole)
        device = device_of(model)
        x, y = to_device(x_all, device), y_all.to(device)
        finite = finite_examples(x)
        usable, usable_y = (x, y) if finite is None else (select(x, finite), y[finite])
        plan = _plan(model, usable, usable_y, task, budget, optimizer, seed, quick, n, lr)
        budget = plan.budget
        bar.plan({c.key: plan.units(c.key, quick) for c in CHECKUP})
        audit = select(usable, slice(0, budget.audit_examples))
        traced = _probe(model, audit, task.forward, "the data") if len(usable_y) else None
        context = Context(
            model,
            task,
            usable,
            usable_y,
            x,
            y,
            index,
            whole,
            traced,
            budget,
            lr=lr,
            optimizer=optimizer,
            quick=quick,
            seed=seed,
            val_data=val_data,
            device=device,
            plan=plan,
        )
        # With no finite example there is nothing to run the model on: only the data audit.
        checks = CHECKUP if traced is not None else CHECKUP[:1]
        with UnitMeter(model, budget.batch_size) as meter:
            timings = _run(checks, context, bar, meter)
    context.measurements["timings_s"] = timings
    context.measurements["plan"] = plan.as_measurement(meter.per_check)
    meta = {
        "model": _describe_model(model),
        "data": f"{type(data).__name__} of {n if n is not None else '?'} examples, inputs "
        f"{_shape(x_all)}",
        "loss": task.name,
        "optimizer": optimizer,
        "lr": lr,
        "quick": quick,
        "seed": seed,
        "device": str(device),
        "torch": torch.__version__,
        "babysit": _version(),
        "timings_s": timings,
        "plan": plan.rule,
    }
    return Report(context.findings, context.measurements, meta)


def _shape(inputs: Inputs) -> str:
    """The shape of one example's inputs, for the report: (8, 8), or {input_ids: (32,) int64,
    ...} for a dict."""
    if isinstance(inputs, Tensor):
        return str(tuple(inputs.shape[1:]))
    return describe(select(inputs, torch.tensor(0)))


def _version() -> str:
    from babysit._version import __version__

    return __version__


def _plan(model, x, y, task, budget, optimizer, seed, quick, examples, lr) -> Plan:
    """The checkup's plan from the measured cost of one training step (babysit.checks.plan);
    the fixed budget when it cannot be measured."""
    step_s = None
    if len(y) and budget.epochs is not None:
        step_s = measure_step(model, x, y, task, budget.batch_size, optimizer, seed)
    return make_plan(budget, examples, step_s, quick, lr_given=lr is not None)


def _run(
    checks: tuple[Check, ...], context: Context, bar: _Progress, meter: UnitMeter | None = None
) -> dict[str, float]:
    """Run each check on `context`: its findings (each naming the check) and measurement go
    into the context; an unexpected failure becomes CHECK_FAILED and the others still run;
    the checks that step aside get one CHECK_SKIPPED per reason. Returns the time per check;
    `meter.per_check` gets the work each did, in units of one training step."""
    context.gates = frozenset(c.key for c in checks if c.gate)
    timings: dict[str, float] = {}
    skipped: dict[str, list[str]] = {}
    for check in checks:
        bar.begin(check.name)
        start, units = time.perf_counter(), meter.units if meter is not None else 0.0
        if meter is not None:
            meter.on_units = lambda total, key=check.key, at=units: bar.used(key, total - at)
        try:
            reason = check.skip(context)
            if reason is not None:
                skipped.setdefault(reason, []).append(check.name)
                continue
            found, measurement = check.run(context)
            context.findings += [replace(f, check=check.key) for f in found]
            if measurement is not None:
                context.measurements[check.key] = measurement
        except UsageError:
            raise
        except Exception as e:  # a failing check must not stop the others
            context.findings.append(_failed(check, e))
        finally:
            timings[check.name] = time.perf_counter() - start
            if meter is not None:
                meter.per_check[check.key] = round(meter.units - units, 2)
            bar.end(check.key)
    for reason, names in skipped.items():
        context.findings.append(
            Finding(
                "CHECK_SKIPPED",
                "info",
                f"skipped {', '.join(names)}: {reason}",
                "fix the findings above and run the checkup again",
                {"steps": names, "reason": reason},
            )
        )
    return timings


def _failed(check: Check, error: Exception) -> Finding:
    return Finding(
        "CHECK_FAILED",
        "warning",
        f"{check.name} could not run: {one_line(error)}",
        "the other checks ran; if the model or loss is unusual, run this step by hand, or "
        "report the error to babysit",
        {"step": check.name, "error": one_line(error)},
        check=check.key,
    )
