"""`babysit.checkup(model, data)`: the CS231n babysitting recipe as one call, before a day of
training is wasted. It runs, in order, and a failing step never stops the rest:

1. data audit: NaN inputs, labels the loss cannot use, un-centred or un-scaled inputs;
2. architecture audit: hidden sigmoids, squashed logits, stacked linear maps, depth without
   normalization;
3. init audit: activations and gradients across depth at init, saturation, dead units,
   symmetric weights;
4. the initial loss against ln(C);
5. overfitting ~20 examples with regularization off, and whether the labels can be learnt;
6. regularization raises the loss;
7. the learning rate: a range test, then a short run at the chosen rate (the update/weight
   ratio per layer);
8. with quick=False and validation data, a short real run judged for over/underfitting.

The user's model is never modified: training happens on deep copies and measurements
restore the model's mode, buffers and gradients. Torch's global RNG state is restored too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

from babysit.checks.findings import Finding
from babysit.checks.generalization import check_generalization
from babysit.checks.lr import UPDATE_RATIO_MAX, UPDATE_RATIO_MIN, check_lr, lr_range_test
from babysit.checks.runs import device_of
from babysit.checks.sanity import (
    check_initial_loss,
    check_learnable,
    check_overfit,
    check_regularization,
)
from babysit.checks.setup import audit_architecture, audit_data, audit_init, frozen_parameters
from babysit.checks.task import Task, task_for
from babysit.checks.trace import Trace, trace
from babysit.errors import UsageError
from babysit.report.report import Report
from babysit.train import OPTIMIZERS

__all__ = ["Budget", "checkup"]


# The checkup runs many small training steps, where torch's intra-op threads cost more than
# they gain. Measured on this project's shared 2-core machine (load 6-7): 300 Adam steps of
# a 64-64-10 MLP take 1.8 s with 1 thread and 20 s with 2; the default `babysit doctor`
# 16 s wall with 1 thread, 54 s with 2 (bench/doctor_time.py, median of 3 paired rounds);
# at load ~1.7 the two are equal (6.4 s, 0.99x). One thread never loses.
CHECKUP_THREADS = 1


@dataclass(frozen=True)
class Budget:
    """How much work each step may do. The defaults keep `babysit doctor` on digits within
    ~10 s of CPU; tests pass smaller ones. Steps are optimizer steps."""

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


# Init findings that explain a model fitting slowly (rather than a bug that stops it).
_EXPLAINS_SLOW_FITTING = (
    "INIT_VANISHING",
    "INIT_EXPLODING",
    "INIT_SATURATED",
    "DEAD_UNITS",
    "INIT_SYMMETRIC",
    "SIGMOID_HIDDEN",
)

_STEPS = (
    "data audit",
    "architecture audit",
    "init audit",
    "initial loss",
    "overfit tiny subset",
    "learnable labels",
    "regularization",
    "lr range test",
    "learning rate",
    "training run",
)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _tensors(
    data: object, what: str, limit: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """(X, y) for the checks, at most `limit` rows drawn with a seeded permutation; the
    drawn rows' indices in the data; and the whole (X, y) when it is in memory anyway
    (TensorDatasets and tensor pairs, read in place; other Datasets load only the drawn
    items), for the audits that should see every example."""
    from babysit.data import as_tensors

    generator = torch.Generator().manual_seed(seed)
    if isinstance(data, Dataset) and not isinstance(data, TensorDataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise UsageError(f"{what} is empty: pass at least one (x, y) example")
        index = torch.randperm(n, generator=generator)[:limit]
        x, y = as_tensors(Subset(data, index.tolist()))
        return x, y, index, None
    x, y = as_tensors(data)
    if len(x) == 0:
        raise UsageError(f"{what} is empty: pass at least one (x, y) example")
    if x.dim() < 2:
        raise UsageError(
            f"{what} inputs must be shaped (N, ...), got shape {tuple(x.shape)}: reshape a "
            f"single feature to (N, 1)"
        )
    index = torch.randperm(len(x), generator=generator)[:limit]
    return x[index], y[index], index, (x, y)


class _Progress:
    """A rich progress bar over the checkup's steps, on stderr (or nothing)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]checkup[/]"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} {task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task("", total=len(_STEPS))

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

    def end(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)


class _Run:
    """Collects findings and measurements; runs each step so that an unexpected failure
    becomes a CHECK_FAILED finding and the other steps still run."""

    def __init__(self, progress: _Progress):
        self.findings: list[Finding] = []
        self.measurements: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.skipped: dict[str, list[str]] = {}
        self.progress = progress

    def finish(self) -> None:
        """One CHECK_SKIPPED finding per reason, naming the steps it skipped."""
        for reason, steps in self.skipped.items():
            self.findings.append(
                Finding(
                    "CHECK_SKIPPED",
                    "info",
                    f"skipped {', '.join(steps)}: {reason}",
                    "fix the findings above and run the checkup again",
                    {"steps": steps, "reason": reason},
                )
            )

    def step(self, name: str, fn: Callable[[], Any], skip: str | None = None) -> Any:
        self.progress.begin(name)
        start = time.perf_counter()
        try:
            if skip is not None:
                self.skipped.setdefault(skip, []).append(name)
                return None
            return fn()
        except UsageError:
            raise
        except Exception as e:  # a failing check must not stop the others
            self.findings.append(
                Finding(
                    "CHECK_FAILED",
                    "warning",
                    f"{name} could not run: {_one_line(e)}",
                    "the other checks ran; if the model or loss is unusual, run this step by "
                    "hand, or report the error to babysit",
                    {"step": name, "error": _one_line(e)},
                )
            )
            return None
        finally:
            self.timings[name] = time.perf_counter() - start
            self.progress.end()

    def add(self, found: tuple[list[Finding], dict[str, Any]] | None, key: str) -> dict:
        if found is None:
            return {}
        findings, measurement = found
        # The step that raised each finding, so that a code several steps raise (NAN_LOSS,
        # LR_TOO_HIGH) is shown in the report's row of that step.
        self.findings += [
            f if "check" in f.evidence else replace(f, evidence={**f.evidence, "check": key})
            for f in findings
        ]
        self.measurements[key] = measurement
        return measurement


def _validate(model: object, optimizer: str, lr: float | None, seed: object) -> None:
    if not isinstance(model, nn.Module):
        raise UsageError(f"checkup needs a torch.nn.Module, got {type(model).__name__}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if lr is not None and (
        isinstance(lr, bool)
        or not isinstance(lr, int | float)
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise UsageError(f"lr must be a positive number or None (find one), got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")


def _probe(model: nn.Module, x: Tensor, what: str) -> Trace:
    """One forward pass with the trace hooks; a model that fails on the data is bad input."""
    try:
        return trace(model, x)
    except Exception as e:
        raise UsageError(
            f"the model fails on a batch of {what} (inputs of shape {tuple(x.shape)}, "
            f"{x.dtype}): {_one_line(e)}: check that the model matches the data's shape"
        ) from None


def _check_loss(task: Task, output: Tensor, y: Tensor) -> None:
    try:
        loss = task.loss(output, y)
    except Exception as e:
        raise UsageError(
            f"the loss {task.name} fails on the model's output (shape {tuple(output.shape)}) "
            f"and the targets (shape {tuple(y.shape)}, {y.dtype}): {_one_line(e)}"
        ) from None
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise UsageError(
            f"the loss must return a scalar, {task.name} returned {shape}: use reduction='mean'"
        )


def _describe_model(model: nn.Module) -> str:
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({params:,} parameters)"


def checkup(
    model: nn.Module,
    data: Dataset | tuple[Tensor, Tensor],
    *,
    val_data: Dataset | tuple[Tensor, Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    lr: float | None = None,
    optimizer: str = "sgd",
    quick: bool = True,
    seed: int = 0,
    budget: Budget | None = None,
    progress: bool = False,
    threads: int | None = CHECKUP_THREADS,
) -> Report:
    """Check `model` on `data` (a Dataset of (x, y) or an (X, y) pair) before training.

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
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise UsageError(f"threads must be a positive integer or None, got {threads!r}")
    budget = budget or Budget()
    started = time.perf_counter()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        report = _checkup(
            model, data, val_data, loss_fn, lr, optimizer, quick, seed, budget, progress, devices
        )
    finally:
        torch.set_num_threads(saved_threads)
    report.meta["duration_s"] = time.perf_counter() - started
    report.meta["threads"] = threads or saved_threads
    return report


def _checkup(
    model, data, val_data, loss_fn, lr, optimizer, quick, seed, budget, progress, devices
) -> Report:
    with torch.random.fork_rng(devices=devices), _Progress(progress) as bar:
        torch.manual_seed(seed)
        run = _Run(bar)
        task = task_for(loss_fn)
        x_all, y_all, index, whole = _tensors(data, "data", budget.max_examples, seed)
        n = len(whole[0]) if whole is not None else len(data)  # type: ignore[arg-type]
        device = device_of(model)
        x, y = x_all.to(device), y_all.to(device)
        _steps(
            run,
            model,
            x,
            y,
            whole,
            index,
            val_data,
            task,
            lr,
            optimizer,
            quick,
            seed,
            budget,
            device,
        )
        run.finish()
    run.measurements["timings_s"] = run.timings
    meta = {
        "model": _describe_model(model),
        "data": f"{type(data).__name__} of {n} examples, inputs {tuple(x_all.shape[1:])}",
        "loss": task.name,
        "optimizer": optimizer,
        "lr": lr,
        "quick": quick,
        "seed": seed,
        "device": str(device),
        "torch": torch.__version__,
        "babysit": _version(),
        "timings_s": run.timings,
    }
    return Report(run.findings, run.measurements, meta)


def _version() -> str:
    from babysit._version import __version__

    return __version__


def _steps(
    run: _Run,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    whole: tuple[Tensor, Tensor] | None,
    index: Tensor,
    val_data: object,
    task: Task,
    lr: float | None,
    optimizer: str,
    quick: bool,
    seed: int,
    budget: Budget,
    device: torch.device,
) -> None:
    finite = torch.isfinite(x.flatten(1)).all(dim=1) if x.is_floating_point() else None
    usable = x if finite is None else x[finite]
    usable_y = y if finite is None else y[finite]
    if len(usable) == 0:
        run.findings.append(
            Finding(
                "DATA_NONFINITE",
                "error",
                f"every one of the {len(x)} examples drawn has NaN or inf inputs",
                "clean the data: drop or impute non-finite values",
                {"examples": len(x)},
            )
        )
        return
    batch = usable[: budget.audit_examples]
    batch_y = usable_y[: budget.audit_examples]
    traced = _probe(model, batch, "the data")
    output = traced.output
    if output is None:
        raise UsageError(
            "the model's forward returned no tensor; checkup needs a model whose output is "
            "one tensor of scores or predictions"
        )

    # NaN and label audits see every example when the data is in memory, so that counts and
    # indices are the user's; otherwise the drawn sample, with indices mapped back.
    audit_all = whole is not None
    data = run.step(
        "data audit",
        lambda: audit_data(
            whole[0] if audit_all else x,
            whole[1] if audit_all else y,
            task,
            output,
            traced,
            index=None if audit_all else index,
        ),
    )
    data_measure = run.add(data, "data")
    structure = {
        "weight_layers": list(dict.fromkeys(c.name for c in traced.weight_calls())),
        "output_shape": list(output.shape[1:]),
    }
    run.add(
        run.step(
            "architecture audit",
            lambda: (
                audit_architecture(traced, task, output) + frozen_parameters(model),
                structure,
            ),
        ),
        "architecture",
    )
    blocking = [f.code for f in run.findings if f.severity == "error"]
    skip = f"{', '.join(dict.fromkeys(blocking))} must be fixed first" if blocking else None
    if skip is None:
        _check_loss(task, output, batch_y)

    # The model audits judge the model: when the inputs are flagged, they run on standardized
    # inputs, so that one cause (the data) gives one finding, not five.
    flagged = [
        f.code
        for f in run.findings
        if f.code in ("DATA_NOT_CENTERED", "DATA_NOT_SCALED") and f.severity == "warning"
    ]
    audit_x, note = batch, ""
    if flagged and skip is None:
        from babysit.data.preprocess import Standardize

        audit_x = Standardize().fit(usable.cpu()).transform(batch.cpu()).to(batch.device)
        note = "on standardized inputs, since the raw ones are flagged"
    if data_measure is not None:
        data_measure["model_audits_on"] = "standardized inputs" if note else "the inputs as given"

    def init_step():
        from babysit.probes import activation_stats

        stats = activation_stats(model, audit_x, batch_y, loss_fn=task.loss_fn)
        run.measurements["layers"] = [s.to_dict() for s in stats]
        found, measurement = audit_init(stats, traced, note)
        measurement["inputs"] = note or "the data as given"
        return found, measurement

    run.add(run.step("init audit", init_step, skip), "init")

    def initial_loss_step():
        found = check_initial_loss(model, audit_x, batch_y, task, note)
        if note:  # what the user gets today, with the raw inputs
            raw_found, raw = check_initial_loss(model, batch, batch_y, task)
            found[1]["as_given"] = raw
            _annotate_data_finding(run, raw)
        return found

    run.add(run.step("initial loss", initial_loss_step, skip), "initial_loss")

    hints = tuple(
        dict.fromkeys(
            f.code
            for f in run.findings
            if f.code in _EXPLAINS_SLOW_FITTING or f.code == "OUTPUT_ACTIVATION"
        )
    )
    overfit = run.step(
        "overfit tiny subset",
        lambda: check_overfit(
            model, usable, usable_y, task, steps=budget.overfit_steps, seed=seed, hints=hints
        ),
        skip,
    )
    run.add(overfit, "overfit")
    if overfit is not None and (overfit[1] or {}).get("reached"):
        _narrow_dead_units_train(run)
    if skip is None and not any(p.requires_grad for p in model.parameters()):
        skip = "the model has no trainable parameters"
    cannot = overfit is not None and any(
        f.code == "CANNOT_OVERFIT" and f.severity == "error" for f in overfit[0]
    )
    run.add(
        run.step(
            "learnable labels",
            lambda: check_learnable(
                model,
                usable,
                usable_y,
                task,
                steps=budget.learnable_steps,
                batch_size=budget.batch_size,
                seed=seed,
            ),
            skip or ("the model cannot overfit a tiny subset" if cannot else None),
        ),
        "learnable",
    )
    run.add(
        run.step(
            "regularization",
            lambda: check_regularization(
                model, usable, usable_y, task, steps=budget.reg_steps, seed=seed
            ),
            skip or ("the model cannot overfit a tiny subset" if cannot else None),
        ),
        "regularization",
    )

    lr_range = run.step(
        "lr range test",
        lambda: lr_range_test(
            model,
            usable,
            usable_y,
            task,
            optimizer=optimizer,
            steps=budget.range_steps,
            batch_size=budget.batch_size,
            seed=seed,
        ),
        skip,
    )
    if lr_range is not None:
        run.measurements["lr_range"] = lr_range
    normalized = [
        c.name
        for c in traced.weight_calls()
        if any(
            isinstance(traced.calls[i].module, nn.modules.batchnorm._BatchNorm)
            for i in traced.consumers.get(c.index, [])
        )
    ]

    def lr_step():
        found, measurement = check_lr(
            model,
            usable,
            usable_y,
            task,
            lr=lr,
            suggestion=(lr_range or {}).get("suggestion"),
            optimizer=optimizer,
            steps=budget.lr_steps,
            batch_size=budget.batch_size,
            seed=seed,
            normalized=normalized,
        )
        measurement["ratio_range"] = [UPDATE_RATIO_MIN, UPDATE_RATIO_MAX]
        return found, measurement

    lr_measure = run.add(run.step("learning rate", lr_step, skip), "lr")
    suggestion = lr_measure.get("suggestion", (lr_range or {}).get("suggestion"))
    if lr_range is not None:
        learnt = _learnt_elsewhere(run.measurements)
        run.findings.append(_suggestion_finding(lr_range, optimizer, lr_measure, learnt))

    if quick or val_data is None:
        why = "quick mode (pass quick=False, or --full)" if quick else "no validation data"
        run.measurements["training"] = {"skipped": why}
        run.progress.end()
        return
    chosen = lr if lr is not None else suggestion

    def training_step():
        vx, vy, _, _ = _tensors(val_data, "val_data", budget.max_examples, seed)
        return check_generalization(
            model,
            (usable, usable_y),
            (vx.to(device), vy.to(device)),
            task,
            lr=chosen,
            optimizer=optimizer,
            epochs=budget.full_epochs,
            min_steps=budget.full_min_steps,
            max_steps=budget.full_max_steps,
            batch_size=budget.batch_size,
            seed=seed,
        )

    run.add(
        run.step(
            "training run",
            training_step,
            skip or (None if chosen is not None else "no learning rate (none given, none found)"),
        ),
        "training",
    )


def _learnt_elsewhere(measurements: dict[str, Any]) -> str | None:
    """What the other training checks measured the model learning, in words (None when
    they saw it learn nothing or did not run), so that the range test's finding never
    contradicts them."""
    learnable = measurements.get("learnable") or {}
    held, chance = learnable.get("held_out_accuracy"), learnable.get("chance")
    margin = learnable.get("margin") or 0.0
    if isinstance(held, float) and isinstance(chance, float) and held > chance + margin:
        return (
            f"the learnable-labels check trained a copy with Adam to {held:.0%} held-out "
            f"accuracy (chance {chance:.0%})"
        )
    overfit = measurements.get("overfit") or {}
    if overfit.get("reached"):
        return "the overfit check fitted 20 examples with Adam"
    return None


def _suggestion_finding(
    lr_range: dict[str, Any],
    optimizer: str,
    lr_measure: dict[str, Any],
    learnt: str | None = None,
) -> Finding:
    """LR_SUGGESTION (info): the range test's usable range and the suggestion, as verified
    by the short run (lowered when the first suggestion blew up); or, when it found none,
    what it measured, the fallback rate the update ratios were measured at, and what the
    other checks saw the model learn (`learnt`)."""
    steps = lr_range.get("steps", 0)
    suggestion = lr_measure.get("suggestion", lr_range.get("suggestion"))
    if suggestion is None:
        start, low = lr_range.get("start_loss"), lr_range.get("min_loss")
        fell = (
            f" (its smoothed loss went from {start:.3g} to at best {low:.3g})"
            if isinstance(start, float) and isinstance(low, float)
            else ""
        )
        fallback = lr_measure.get("fallback")
        ratios = (
            f"; the update/weight ratios were measured at the fallback lr {fallback:g} instead"
            if fallback is not None
            else ""
        )
        if learnt is not None:
            verdict = (
                f"; yet {learnt}: the model learns, the {optimizer} sweep was too short or "
                f"too noisy to show it"
            )
            fix = (
                f"pass a learning rate (lr=..., --lr) to have it judged, e.g. "
                f"{fallback or 0.01:g} for {optimizer}, or search one on a log scale "
                f"(babysit search)"
            )
        else:
            verdict = "; no other check saw the model learn either"
            fix = (
                "see the other findings (a model that cannot learn, labels that do not "
                "follow the inputs) before tuning the learning rate"
            )
        return Finding(
            "LR_SUGGESTION",
            "info",
            f"the learning-rate range test ({optimizer}, {steps} steps from 1e-7 to 10) found "
            f"no rate at which the loss falls by 10%{fell}" + ratios + verdict,
            fix,
            {
                **{k: lr_range.get(k) for k in ("start_loss", "min_loss", "steps")},
                "fallback": fallback,
            },
        )
    lowered = lr_measure.get("lowered_from") or []
    rule = lr_range.get("rule", "a tenth of the lowest point")
    how = (
        f"{suggestion:.2g} ({rule}, lowered from {lowered[0]:.2g} because a short run there spiked)"
        if lowered
        else f"{suggestion:.2g} ({rule})"
    )
    unstable = lr_measure.get("unstable")
    return Finding(
        "LR_SUGGESTION",
        "info",
        f"learning-rate range test ({optimizer}, {steps} steps): the loss falls from lr "
        f"{lr_range['low']:.2g} and is lowest at {lr_range['high']:.2g}; suggested lr {how}"
        + (f"; even there the {unstable}" if unstable else ""),
        f"train with lr around {suggestion:.2g} ({optimizer}), then refine with a coarse-to-"
        f"fine random search (babysit search)",
        {
            "suggestion": suggestion,
            "lowered_from": lowered,
            **{k: lr_range.get(k) for k in ("low", "high", "start_loss", "min_loss")},
        },
    )


# A ReLU layer this narrow or narrower, with live units left, in a model that fits the tiny
# subset, gets DEAD_UNITS as info: its dead fraction at init is a small-number effect, not a
# fault. Measured: the published 64-32-16-8-16-32-64 autoencoder at torch's default init has
# 3 of 8 bottleneck units and 14 of 32 decoder units dead on 512 digits, and trains well
# (SGD lr 0.05); the faults of the grid are in layers of 64 units or more (biases of -5
# kill 43% of 100).
DEAD_NARROW_UNITS = 32


def _narrow_dead_units_train(run: _Run) -> None:
    """DEAD_UNITS drops to info when every flagged layer is narrow and still has live units,
    and the model has just fitted 20 examples (the lecture: a layer that trains is fine)."""
    for i, f in enumerate(run.findings):
        if f.code != "DEAD_UNITS" or f.severity != "warning":
            continue
        units, live = f.evidence.get("units") or [], f.evidence.get("live_units") or []
        if units and all(
            isinstance(u, int) and 0 < u <= DEAD_NARROW_UNITS and n > 0
            for u, n in zip(units, live, strict=False)
        ):
            run.findings[i] = replace(
                f,
                severity="info",
                message=f"{f.message}; the layers are narrow ({max(units)} units or fewer), "
                f"units are left alive in each, and the model fits 20 examples: this does "
                f"not stop it from training",
            )


def _annotate_data_finding(run: _Run, raw: dict[str, Any]) -> None:
    """Add what the flagged inputs do to the first loss to the data finding's message (the
    scale one when both are flagged: scale is what inflates the logits)."""
    expected, loss = raw.get("expected"), raw.get("loss")
    if expected is None or loss is None or not math.isfinite(loss):
        return
    flagged = [
        i
        for code in ("DATA_NOT_SCALED", "DATA_NOT_CENTERED")
        for i, f in enumerate(run.findings)
        if f.code == code and f.severity == "warning"
    ]
    if flagged:
        f = run.findings[flagged[0]]
        run.findings[flagged[0]] = replace(
            f,
            message=f"{f.message}; with these inputs the first loss is {loss:.3g} "
            f"(expected {expected:.3g})",
            evidence={**f.evidence, "initial_loss_as_given": loss, "expected": expected},
        )
