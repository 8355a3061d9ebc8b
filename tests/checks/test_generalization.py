import checkup_grid
import torch

from babysit.checks.generalization import OVERFIT_GAP, check_generalization
from babysit.checks.task import task_for
from babysit.nn import mlp

CE = task_for(None)


def _run(hidden, n_train, **kw):
    x, y, vx, vy = checkup_grid.digits_standardized()
    torch.manual_seed(0)
    model = mlp(64, hidden, 10)
    return check_generalization(
        model,
        (x[:n_train], y[:n_train]),
        (vx, vy),
        CE,
        lr=0.05,
        optimizer="momentum",
        epochs=10,
        min_steps=kw.get("min_steps", 200),
        max_steps=1000,
        batch_size=64,
    )


def test_a_healthy_run_raises_nothing():
    findings, m = _run([100, 100], 1437)
    assert findings == []
    assert m["train_accuracy"] > 0.98 and m["gap"] < OVERFIT_GAP


def test_a_big_model_on_60_examples_overfits():
    findings, m = _run([256, 256], 60)
    assert [f.code for f in findings] == ["OVERFITTING"]
    assert m["train_accuracy"] == 1.0 and m["gap"] > OVERFIT_GAP


def test_a_two_unit_bottleneck_underfits_against_the_linear_baseline():
    findings, m = _run([2], 1437)
    assert [f.code for f in findings] == ["UNDERFITTING"]
    assert m["train_accuracy"] < m["linear_val_accuracy"] - 0.02
    assert m["linear_val_accuracy"] > 0.9  # digits are nearly linearly separable


def test_epochs_are_turned_into_steps_with_a_floor_for_small_data():
    _, m = _run([32], 60, min_steps=100)
    assert m["steps"] == 100  # 60 examples: 1 step per epoch, 10 epochs raised to 100 steps
