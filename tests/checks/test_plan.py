"""The checkup's plan (babysit.checks.plan): the fixed budget where it is cheap, scaled to
2 epochs of training where it is not, and the work counted in units of a training step."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks.plan import (
    FLOORS,
    FORWARD_COST,
    LR_FLOOR_AT_SUGGESTION,
    SHARES,
    UnitMeter,
    make_plan,
)
from babysit.doctor import Budget, _Progress


def test_a_cheap_model_keeps_the_fixed_budget_whatever_its_epochs():
    # 1 ms a step: the fixed budget is ~0.6 s, far above 2 epochs of 100 examples (4 steps)
    # but below min_seconds, so nothing is scaled (digits stays as calibrated).
    plan = make_plan(Budget(), examples=100, step_s=1e-3)
    assert not plan.scaled and plan.budget == Budget()
    assert plan.fixed_steps > plan.allowance_steps == 4


def test_a_budget_within_its_epochs_is_not_scaled():
    plan = make_plan(Budget(), examples=10**6, step_s=1.0)
    assert not plan.scaled and plan.budget == Budget()


def test_epochs_none_never_scales():
    plan = make_plan(Budget(epochs=None), examples=100, step_s=10.0)
    assert not plan.scaled and plan.budget == Budget(epochs=None)


def test_a_costly_model_gets_each_share_of_its_two_epochs_in_its_own_steps():
    # 10,000 examples of batch 64: 2 epochs are 314 steps, half the fixed budget's ~600;
    # one step of 20 counts as 20/64 of a step of 64.
    budget = Budget()
    plan = make_plan(budget, examples=10_000, step_s=1.0)
    assert plan.scaled and plan.allowance_steps == 2 * math.ceil(10_000 / 64)
    left = plan.allowance_steps - (128 / 64) - (128 / 64) * FORWARD_COST - 2
    b, small = plan.budget, 20 / 64
    assert b.lr_steps == min(budget.lr_steps, round(SHARES["lr_steps"] * left))
    assert b.reg_steps == min(budget.reg_steps, round(SHARES["reg_steps"] * left / (2 * small)))
    assert b.overfit_steps == round(SHARES["overfit_steps"] * left / (small * 1.1))
    assert b.range_steps == min(budget.range_steps, round(SHARES["range_steps"] * left / 0.25))
    assert b.lr_steps < budget.lr_steps and b.reg_steps < budget.reg_steps
    assert b.audit_examples == 128 and plan.range_batch_size == 16


def test_a_very_costly_model_never_goes_below_the_floors():
    plan = make_plan(Budget(), examples=64, step_s=100.0)
    assert plan.scaled
    for name, floor in FLOORS.items():
        assert getattr(plan.budget, name) == floor


def test_without_a_user_lr_the_lr_run_has_its_own_floor():
    # At the suggestion the run is judged on divergence and update ratios, not on how far
    # the loss falls (LR_TOO_LOW judges a given lr): 10 steps, against 20 for a given lr.
    given = make_plan(Budget(), examples=64, step_s=100.0)
    suggested = make_plan(Budget(), examples=64, step_s=100.0, lr_given=False)
    assert given.budget.lr_steps == FLOORS["lr_steps"] == 20
    assert suggested.budget.lr_steps == LR_FLOOR_AT_SUGGESTION == 10
    assert replace(suggested.budget, lr_steps=20) == given.budget


@pytest.mark.parametrize("examples", [64, 2000, 10_000])
def test_a_scaled_plan_trains_the_same_steps_whatever_the_measured_step_time(examples):
    # The timing only decides whether to scale: a loaded machine (3x slower) plans the
    # same steps.
    quiet, loaded = (make_plan(Budget(), examples, step_s=s) for s in (5.0, 15.0))
    assert quiet.scaled and loaded.scaled
    assert quiet.budget == loaded.budget and quiet.planned == loaded.planned


def test_a_floor_never_raises_a_small_given_budget():
    small = Budget(overfit_steps=5, learnable_steps=5, reg_steps=2, range_steps=4, lr_steps=4)
    plan = make_plan(small, examples=64, step_s=100.0)
    assert (plan.budget.overfit_steps, plan.budget.lr_steps) == (5, 4)


def test_the_unit_meter_counts_training_and_forward_only_work_and_copies():
    import copy

    model = nn.Linear(3, 2)
    with UnitMeter(model, batch_size=64) as meter:
        model(torch.zeros(64, 3)).sum().backward()  # one training step's forward
        with torch.no_grad():
            copy.deepcopy(model)(torch.zeros(128, 3))  # a copy, forward only
    assert meter.units == pytest.approx(1 + 2 * FORWARD_COST)
    model(torch.zeros(64, 3))  # the hook is gone
    assert meter.units == pytest.approx(1 + 2 * FORWARD_COST)
    assert not model._forward_hooks


def test_the_checkup_records_its_plan_and_the_steps_it_used():
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    budget = Budget(overfit_steps=30, learnable_steps=20, range_steps=20, lr_steps=20)
    report = bs.checkup(model, (x, y), budget=budget)
    plan = report.measurements["plan"]
    assert not plan["scaled"] and plan["step_s"] > 0 and plan["allowance_steps"] == 8
    assert plan["planned_steps"]["lr_steps"] == 20
    assert plan["used_steps"]["lr"] == pytest.approx(20, abs=0.5)  # 20 steps of 64
    assert not model._forward_hooks


def test_a_forced_scaled_checkup_stays_near_its_allowance_and_reads_the_lr_run():
    torch.manual_seed(0)
    x, y = torch.randn(512, 8), torch.randint(0, 3, (512,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    report = bs.checkup(model, (x, y), budget=Budget(min_seconds=0.0))
    plan = report.measurements["plan"]
    assert plan["scaled"] and plan["planned_steps"]["lr_steps"] == LR_FLOOR_AT_SUGGESTION
    assert plan["used_steps"]["params"] == 0  # read the learning-rate run
    assert report.measurements["params"]["steps"] == LR_FLOOR_AT_SUGGESTION
    assert len(report.measurements["lr"]["run"]["step_loss"]) == LR_FLOOR_AT_SUGGESTION
    # the tiny-subset fit is measured every 5 steps (its steps are costly), not every 10
    checks = [c[0] for c in report.measurements["overfit"]["runs"][0]["checks"]]
    assert checks[:2] == [0, 5] and all(s % 5 == 0 for s in checks[:-1])
    assert "CHECK_FAILED" not in report.codes


def test_per_position_labels_skip_the_learnable_check_before_training():
    torch.manual_seed(0)
    ids = torch.randint(0, 10, (256, 6))
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
    report = bs.checkup(model, (ids, ids), budget=Budget(learnable_steps=50))
    assert "per-position" in report.measurements["learnable"]["skipped"]
    assert report.measurements["plan"]["used_steps"]["learnable"] < 0.1


def test_the_progress_bar_totals_the_planned_step_units_and_shows_the_time_left():
    from rich.progress import TimeRemainingColumn

    bar = _Progress(True)
    assert any(isinstance(c, TimeRemainingColumn) for c in bar.bar.columns)
    bar.plan({"overfit": 30.0, "lr": 10.0})
    task = bar.bar.tasks[0]
    assert task.total == 40.0
    bar.used("overfit", 12.0)
    assert task.completed == 12.0
    bar.used("overfit", 99.0)  # never past the check's share
    assert task.completed == 30.0
    bar.end("overfit")
    bar.used("lr", 4.0)
    assert task.completed == 34.0


def test_timing_the_step_changes_nothing_the_checks_measure():
    """An unscaled plan with the step timed (default) and without (epochs=None) give the
    same report: the timing runs on a copy and leaves the global RNG (dropout) as it was."""
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))

    def run(**budget):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
        small = dict(overfit_steps=20, learnable_steps=10, range_steps=10, lr_steps=10)
        return bs.checkup(model, (x, y), budget=Budget(**small, **budget))

    timed, untimed = run(), run(epochs=None)
    assert timed.measurements["plan"]["step_s"] > 0
    assert untimed.measurements["plan"]["step_s"] is None
    for key in ("init", "initial_loss", "overfit", "lr_range"):
        assert timed.measurements[key] == untimed.measurements[key], key
    assert [f.message for f in timed.findings] == [f.message for f in untimed.findings]


def test_a_checkup_with_the_progress_bar_moves_it_to_its_planned_total(monkeypatch):
    import babysit.doctor as doctor

    bars = []

    class Kept(_Progress):
        def __init__(self, enabled):
            super().__init__(enabled)
            bars.append(self)

    monkeypatch.setattr(doctor, "_Progress", Kept)
    torch.manual_seed(0)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    budget = Budget(overfit_steps=10, learnable_steps=10, range_steps=10, lr_steps=10)
    report = bs.checkup(model, (x, y), budget=budget, progress=True)
    task = bars[0].bar.tasks[0]
    planned = report.measurements["plan"]["planned_units"]
    assert task.total == pytest.approx(sum(planned.values()), rel=1e-2)
    assert task.completed == pytest.approx(task.total)
