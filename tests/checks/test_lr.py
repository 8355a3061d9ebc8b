import math

import numpy as np
import pytest
import torch
from torch import nn

from babysit.checks.lr import (
    LR_FALLBACK,
    LR_RANGE_DROP,
    LR_SUGGESTION_FACTOR,
    analyse_range,
    check_lr,
    lr_range_test,
)
from babysit.checks.task import task_for
from babysit.nn import mlp
from babysit.train import fit
from babysit.train.measuring import LRRangeTest, UpdateRatioLog

CE = task_for(None)


def _model():
    torch.manual_seed(0)
    return mlp(64, [64, 64], 10)


def test_analyse_range_on_a_known_curve():
    """A loss that is flat, falls to its minimum at lr = 0.1, then explodes."""
    lrs = np.geomspace(1e-7, 10, 100)
    z = np.log10(lrs)
    losses = np.where(z < -3, 2.3, 2.3 - 2.0 * np.clip((z + 3) / 2, 0, 1))
    losses = np.where(z > -1, 0.3 + 5 * (z + 1) ** 2, losses)
    result = analyse_range(lrs.tolist(), losses.tolist())
    assert result["high"] == pytest.approx(0.1, rel=0.35)
    assert result["suggestion"] == pytest.approx(LR_SUGGESTION_FACTOR * result["high"])
    # The usable range starts where the loss is LR_RANGE_DROP below its start: z = -3 + 0.23.
    assert math.log10(result["low"]) == pytest.approx(-3 + 2 * LR_RANGE_DROP * 2.3 / 2, abs=0.2)


def test_analyse_range_stops_at_the_first_nan_and_finds_nothing_in_a_flat_curve():
    lrs = np.geomspace(1e-7, 10, 50).tolist()
    flat = [2.3 + 0.01 * math.sin(i) for i in range(50)]
    assert analyse_range(lrs, flat)["suggestion"] is None
    falling = list(np.linspace(2.3, 0.5, 40)) + [math.nan] * 10
    result = analyse_range(lrs, falling)
    assert len(result["smoothed"]) == 40 and result["suggestion"] is not None


def _noisy_regression_curve(fall: float) -> tuple[np.ndarray, np.ndarray]:
    """An MSE-like range test: per-batch losses around 1.0 with 15% batch-to-batch noise and
    two easy batches in a row at lr ~1e-5 (a dip of noise), falling by `fall` from lr
    1e-2 to 1, exploding after."""
    lrs = np.geomspace(1e-7, 10, 100)
    z = np.log10(lrs)
    level = 1.0 - fall * np.clip((z + 2) / 2, 0, 1)
    losses = level * (1 + 0.15 * np.random.default_rng(0).standard_normal(100))
    losses[25:27] = 0.6  # z ~ -5
    losses = np.where(z > 0.2, 1.0 + 5 * (z - 0.2), losses)
    return lrs, losses


def test_a_dip_of_batch_noise_is_not_read_as_a_fall():
    lrs, losses = _noisy_regression_curve(fall=0.0)
    result = analyse_range(lrs.tolist(), losses.tolist())
    assert result["suggestion"] is None, result["suggestion"]
    # the dip alone would pass the 10% rule: the noise makes the difference
    smooth = np.asarray(result["smoothed"])
    assert smooth.min() < result["start_loss"] * (1 - LR_RANGE_DROP)


def test_a_real_fall_of_a_noisy_regression_loss_is_found():
    lrs, losses = _noisy_regression_curve(fall=0.6)
    result = analyse_range(lrs.tolist(), losses.tolist())
    assert 1e-2 < result["low"] < result["high"] <= 2.0
    assert result["suggestion"] >= 1e-3


def test_range_test_grows_the_lr_exponentially(digits_std):
    x, y = digits_std
    test = LRRangeTest(start=1e-6, end=1.0, steps=20, diverge=1e9)
    fit(_model(), (x, y), epochs=1, max_steps=20, lr=1e-6, callbacks=[test])
    assert test.lrs == pytest.approx(np.geomspace(1e-6, 1.0, 20).tolist(), rel=1e-9)


def test_range_test_suggests_a_rate_that_trains(digits_std):
    x, y = digits_std
    result = lr_range_test(_model(), x, y, CE, optimizer="sgd", steps=100, batch_size=64)
    assert 1e-3 < result["suggestion"] < 1.0
    assert result["low"] <= result["suggestion"] <= result["high"]


def test_update_ratios_equal_lr_times_gradient_over_weight_for_sgd():
    """Plain SGD: ||dW|| / ||W|| = lr * ||grad|| / ||W||, an independent reference."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    w0 = model[0].weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, model[0].weight)
    watch = UpdateRatioLog(model)
    fit(
        model, (x, y), epochs=1, max_steps=1, lr=0.1, batch_size=8, shuffle=False, callbacks=[watch]
    )
    expected = 0.1 * float(grad.norm() / w0.norm())
    assert watch.medians()["0"] == pytest.approx(expected, rel=1e-5)


def test_a_healthy_given_lr_raises_nothing(digits_std):
    x, y = digits_std
    findings, m = check_lr(
        _model(), x, y, CE, lr=0.05, suggestion=0.04, optimizer="sgd", steps=100, batch_size=64
    )
    assert findings == []
    assert m["run"]["decrease"] > 0.5


def test_a_far_too_high_lr_blows_up(digits_std):
    x, y = digits_std
    findings, _ = check_lr(
        _model(), x, y, CE, lr=10.0, suggestion=0.04, optimizer="sgd", steps=100, batch_size=64
    )
    assert [(f.code, f.severity) for f in findings] == [("LR_TOO_HIGH", "error")]
    assert "0.04" in findings[0].fix


def test_a_far_too_low_lr_barely_moves(digits_std):
    x, y = digits_std
    findings, m = check_lr(
        _model(), x, y, CE, lr=1e-5, suggestion=0.04, optimizer="sgd", steps=100, batch_size=64
    )
    codes = [f.code for f in findings]
    assert codes[0] == "LR_TOO_LOW" and set(codes) <= {"LR_TOO_LOW", "UPDATE_RATIO_LOW"}
    assert m["run"]["decrease"] < 0.3 * m["reference_run"]["decrease"]


def test_a_blowing_up_suggestion_is_lowered(digits_std):
    x, y = digits_std
    findings, m = check_lr(
        _model(), x, y, CE, lr=None, suggestion=20.0, optimizer="sgd", steps=60, batch_size=64
    )
    assert m["lowered_from"][0] == 20.0 and m["suggestion"] < 20.0
    assert all(f.code != "LR_TOO_HIGH" for f in findings)


def test_a_layer_cut_from_the_gradient_has_a_zero_update_ratio(digits_std):
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten, self.fc1, self.fc2 = nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(self.flatten(x))).detach())

    x, y = digits_std
    torch.manual_seed(0)
    findings, m = check_lr(
        Detached(), x, y, CE, lr=None, suggestion=0.05, optimizer="sgd", steps=30, batch_size=64
    )
    assert [(f.code, f.layer) for f in findings] == [("UPDATE_RATIO_LOW", "fc1")]
    assert m["run"]["update_ratios"]["fc1"] == 0.0


class _Detached(nn.Module):
    """fc1 is cut from the gradient: only fc2 learns."""

    def __init__(self):
        super().__init__()
        self.flatten, self.fc1, self.fc2 = nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flatten(x))).detach())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_without_a_suggestion_the_ratios_are_measured_at_a_fallback_rate(digits_std, optimizer):
    x, y = digits_std
    torch.manual_seed(0)
    findings, m = check_lr(
        _Detached(),
        x,
        y,
        CE,
        lr=None,
        suggestion=None,
        optimizer=optimizer,
        steps=30,
        batch_size=64,
    )
    assert m["fallback"] == (LR_FALLBACK.get(optimizer, 1e-3)) and m["run"]["lr"] == m["fallback"]
    assert [(f.code, f.layer) for f in findings] == [("UPDATE_RATIO_LOW", "fc1")]
    assert "the fallback lr" in findings[0].message


def test_a_sweep_that_finds_nothing_is_run_again_slower(digits_std):
    x, y = digits_std
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]  # nothing to learn
    result = lr_range_test(_model(), x[:256], y[:256], CE, optimizer="sgd", steps=20, batch_size=64)
    assert result["first_sweep"]["steps"] == 20 and result["steps"] > 20
    assert len(result["lr"]) == result["steps"]
