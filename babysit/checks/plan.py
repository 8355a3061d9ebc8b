"""The checkup's plan: how much work each step may do, from the measured cost of one training
step of the model on its data.

The target: the default checkup costs at most `Budget.epochs` (2) epochs of plain
training of the same model on the same data. The unit is one training step (forward,
backward, optimizer step) at `Budget.batch_size`, timed on a copy right after the data is
drawn; 2 epochs of N examples are 2 * ceil(N / B) of them. The rule:

- when the fixed `Budget` would cost no more than that allowance, or no more than
  `Budget.min_seconds` in absolute time, it is used as given (a digits MLP: its 2 epochs are
  milliseconds, and the fixed steps keep the detection figures as calibrated);
- otherwise each training check gets a share of the allowance left after the audits
  (`SHARES`), turned into its own step count at the cost of its own steps (a full batch of
  20 for the overfit and regularization fits), never below the floor that keeps it
  meaningful (`FLOORS`) nor above the fixed budget; the audits use fewer examples, the range
  test sub-batches, and the learnable-labels run stops once its verdict is clear.

The timing decides one thing only: whether the fixed budget fits (the rule's first case).
A scaled plan's step counts are a function of the budget, the number of examples and
whether an lr is given: the allowance is counted in steps, and a step of 20 in the share
of the examples it takes (20 / B), not timed, so two runs of the same checkup train the
same steps whatever the machine's load (a model whose fixed budget takes about
`Budget.min_seconds` can still land on either side of the rule: `epochs=None` or
`min_seconds=0` pins it).

`UnitMeter` counts the work actually done, in the same units, from a forward hook on the
model (copies made by the checks keep it): examples through a forward with gradients count
as training, without as a third of it (a backward pass costs about twice the forward:
Kaplan et al. 2020, "Scaling laws", C = 6N per token to train against 2N to infer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.runs import device_of, train_copy
from babysit.checks.task import Task
from babysit.data.batches import Inputs, select
from babysit.train import Callback, TrainState

__all__ = [
    "FLOORS",
    "FORWARD_COST",
    "LR_FLOOR_AT_SUGGESTION",
    "SHARES",
    "Plan",
    "UnitMeter",
    "make_plan",
    "measure_step",
]

# A forward pass without backward, as a fraction of a training step (Kaplan et al. 2020:
# 2N of 6N FLOPs per example).
FORWARD_COST = 1 / 3
# The rate of the timed steps (on a copy, thrown away): any positive rate costs the same.
TIMING_LR = 1e-6
# The batch of the tiny-subset fits (babysit.checks.sanity.OVERFIT_EXAMPLES).
SMALL_BATCH = 20
# Shares of the allowance left after the audits, per Budget field. Ours: the learnable-labels
# run and the learning-rate run train on batches of B, the tiny-subset fits on 20; the
# range test is sub-batched (RANGE_BATCH).
SHARES = {
    "overfit_steps": 0.25,
    "learnable_steps": 0.3,
    "reg_steps": 0.08,
    "range_steps": 0.15,
    "lr_steps": 0.17,
}
# The fewest steps a scaled check may get, so that it still means something. Ours: a healthy
# width-4 CIFAR ResNet-18 fits 20 images in 30 Adam steps; the learning-rate rules read the
# mean of the last 10 losses against the first 5; a range test of 40 steps over 8 decades
# still has 5 per decade; regularization's decay is set for its own number of steps.
FLOORS = {
    "overfit_steps": 60,
    "learnable_steps": 30,
    "reg_steps": 10,
    "range_steps": 40,
    "lr_steps": 20,
}
# The learning-rate run's floor without a user lr: at the range test's suggestion the run
# is judged on divergence (NaN, 3x the first loss: within the first steps at a rate that
# blows up) and on the update/weight ratios (medians per step), never on how far the loss
# falls (LR_TOO_LOW judges a given lr only), and the parameter check needs 5 steps of it.
LR_FLOOR_AT_SUGGESTION = 10
# Audit examples of a scaled plan: the per-layer statistics on 128 examples (of a conv net:
# 128 x H x W positions per channel; of a language model, 128 x T tokens).
SCALED_AUDIT_EXAMPLES = 128
# The range test's batch in a scaled plan: a quarter of B (at least 16); its noise is read
# by the range test's own noise rule (babysit.checks.lr.LR_RANGE_NOISE_Z).
RANGE_BATCH_FRACTION = 0.25
RANGE_BATCH_MIN = 16
# Extra work per check besides its steps, in units: the learnable-labels check's BatchNorm
# re-estimation and held-out scoring (about 1,000 examples of forward), the parameter
# check's 5 steps (none in a scaled plan: it reads the learning-rate run), the tiny-subset
# measurements every 10 steps.
LEARNABLE_EVAL_EXAMPLES = 1024  # 256 re-estimating BatchNorm, 256 held out, 128 seen, twice
PARAMS_STEPS = 5


@dataclass
class Plan:
    """The budget the checks run with (`budget`), and what it was made from: the measured
    seconds of one training step at B (`step_s`), the allowance in steps, and whether the
    fixed budget was scaled down to it."""

    budget: Any
    given: Any = None  # the budget as given
    step_s: float | None = None
    allowance_steps: float | None = None
    fixed_steps: float | None = None
    scaled: bool = False
    range_batch_size: int | None = None
    rule: str = "the fixed budget"
    planned: dict[str, float] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # runs one check leaves to another

    @property
    def small_cost(self) -> float:
        """A step of the tiny-subset fits, in units of a step at B: its share of the
        examples (the same work per example, as `UnitMeter` counts it), not a timing, so
        that the plan does not change with the machine's load."""
        return SMALL_BATCH / max(self.budget.batch_size, SMALL_BATCH)

    def units(self, key: str, quick: bool = True) -> float:
        """The planned cost of one check (by its measurement key), in units of a step at B:
        the progress bar's total is their sum."""
        b, small = self.budget, self.small_cost
        audit = b.audit_examples / b.batch_size
        range_cost = (self.range_batch_size or b.batch_size) / b.batch_size
        costs = {
            "init": audit,
            "initial_loss": audit * FORWARD_COST,
            "overfit": b.overfit_steps * small * 1.1,  # a measurement every 10 steps
            "learnable": b.learnable_steps + LEARNABLE_EVAL_EXAMPLES / b.batch_size * FORWARD_COST,
            "regularization": 2 * b.reg_steps * small,
            "lr_range": b.range_steps * range_cost,
            "lr": b.lr_steps,
            "params": 0 if self.scaled else PARAMS_STEPS,  # scaled: reads the lr run
            "training": 0 if quick else b.full_min_steps,
        }
        return float(costs.get(key, 0.0))

    def as_measurement(self, used: float | None = None) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scaled": self.scaled,
            "step_s": self.step_s,
            "batch_size": self.budget.batch_size,
            "allowance_steps": self.allowance_steps,
            "fixed_budget_steps": self.fixed_steps,
            "planned_steps": {k: getattr(self.budget, k) for k in (*SHARES, "audit_examples")},
            "range_batch_size": self.range_batch_size or self.budget.batch_size,
            "planned_units": dict(self.planned),
            "used_steps": used,
        }


class _StepTimer(Callback):
    """Seconds of each step of a run, from the start of its batch to after the optimizer
    step (the device synchronised on CUDA, where work is asynchronous)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._start = device, [], 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_batch_begin(self, state: TrainState) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_batch_end(self, state: TrainState, loss: Tensor) -> None:
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)


def measure_step(
    model: nn.Module, x: Inputs, y: Tensor, task: Task, batch_size: int, optimizer: str, seed: int
) -> float | None:
    """Seconds of one training step of a copy of `model` on a batch of `batch_size` rows of
    (x, y): the faster of two (the first pays for allocation and warm-up), the global RNG
    left as it was. None when the
    model does not train on the data (the probe then names the problem)."""
    rows = min(len(y), 2 * batch_size)
    device = device_of(model)
    timer = _StepTimer(device)
    devices = [device] if device.type == "cuda" else []
    try:  # the checks that follow see the global RNG as if nothing had run
        with torch.random.fork_rng(devices=devices):
            part = slice(0, rows)
            _timed_fit(model, select(x, part), y[part], task, batch_size, optimizer, seed, timer)
    except Exception:
        return None
    return min(timer.seconds) if timer.seconds else None


def _timed_fit(model, x, y, task, batch_size, optimizer, seed, timer) -> None:
    train_copy(
        model,
        x,
        y,
        task,
        steps=2,
        lr=TIMING_LR,
        optimizer=optimizer,
        batch_size=min(batch_size, max(1, len(y) // 2)),
        seed=seed,
        callbacks=[timer],
    )


def _fixed_units(plan: Plan, quick: bool) -> float:
    keys = ("init", "initial_loss", "overfit", "learnable", "regularization", "lr_range", "lr")
    return sum(plan.units(k, quick) for k in (*keys, "params"))


def make_plan(
    budget: Any,
    examples: int,
    step_s: float | None,
    quick: bool = True,
    lr_given: bool = True,
) -> Plan:
    """The plan for a model whose training step takes `step_s` seconds at
    `budget.batch_size` on data of `examples` examples: `budget`
    itself when it fits the allowance (`budget.epochs` epochs) or `budget.min_seconds`, else
    a scaled copy (module docstring). Without a user lr (`lr_given` False) the
    learning-rate run's floor is LR_FLOOR_AT_SUGGESTION."""
    plan = Plan(budget, budget, step_s)
    fixed = _fixed_units(plan, quick)
    plan.fixed_steps = fixed
    if step_s is None or budget.epochs is None:
        plan.rule = "the fixed budget (no step cost measured)" if step_s is None else plan.rule
        return _planned(plan, quick)
    allowance = budget.epochs * math.ceil(examples / budget.batch_size)
    plan.allowance_steps = allowance
    if fixed <= allowance or fixed * step_s <= budget.min_seconds:
        plan.rule = (
            f"the fixed budget ({fixed:.0f} steps, {fixed * step_s:.1f} s) is within "
            f"{budget.epochs:g} epochs ({allowance:.0f} steps) or {budget.min_seconds:g} s"
        )
        return _planned(plan, quick)
    audit = min(budget.audit_examples, SCALED_AUDIT_EXAMPLES)
    range_batch = max(RANGE_BATCH_MIN, int(budget.batch_size * RANGE_BATCH_FRACTION))
    plan.range_batch_size = min(range_batch, budget.batch_size)
    plan.budget = replace(budget, audit_examples=audit)
    # The audits, and the timing itself (two steps at B).
    overhead = plan.units("init") + plan.units("initial_loss") + 2
    left = max(allowance - overhead, 0.0)
    small = plan.small_cost
    cost = {
        "overfit_steps": small * 1.1,
        "learnable_steps": 1.0,
        "reg_steps": 2 * small,
        "range_steps": plan.range_batch_size / budget.batch_size,
        "lr_steps": 1.0,
    }
    floors = {**FLOORS, **({} if lr_given else {"lr_steps": LR_FLOOR_AT_SUGGESTION})}
    steps = {}
    for name, share in SHARES.items():
        given = getattr(budget, name)
        steps[name] = max(min(floors[name], given), min(given, round(share * left / cost[name])))
    plan.budget = replace(plan.budget, **steps)
    plan.scaled = True
    plan.rule = (
        f"scaled to {budget.epochs:g} epochs ({allowance:.0f} steps of {step_s:.3g} s): the "
        f"fixed budget would take {fixed:.0f} steps"
    )
    return _planned(plan, quick)


def _planned(plan: Plan, quick: bool) -> Plan:
    keys = ("init", "initial_loss", "overfit", "learnable", "regularization", "lr_range", "lr")
    plan.planned = {k: round(plan.units(k, quick), 1) for k in (*keys, "params", "training")}
    return plan


class UnitMeter:
    """Counts the work done through `model`'s forward, in units of a training step at
    `batch_size` (module docstring), while the `with` block runs; copies of the model made
    inside keep the hook. `on_units(total)` is called after each forward."""

    def __init__(self, model: nn.Module, batch_size: int, on_units=None):
        self.model, self.batch_size, self.on_units = model, batch_size, on_units
        self.units = 0.0
        self.per_check: dict[str, float] = {}  # filled in by the checkup, check by check
        self._handle = None

    def add(self, args: tuple, kwargs: dict) -> None:
        rows = next(
            (len(a) for a in (*args, *kwargs.values()) if isinstance(a, Tensor) and a.dim()),
            0,
        )
        weight = 1.0 if torch.is_grad_enabled() else FORWARD_COST
        self.units += weight * rows / self.batch_size
        if self.on_units is not None:
            self.on_units(self.units)

    def __enter__(self) -> UnitMeter:
        # A plain function, not a bound method: deepcopy shares functions, so the copies the
        # checks train report to this meter (a bound method would copy the meter too).
        def hook(module, args, kwargs, output, meter=self):
            meter.add(args, kwargs)

        self._handle = self.model.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
