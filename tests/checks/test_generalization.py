import checkup_grid
import pytest
import torch

from babysit.checks.generalization import OVERFIT_GAP, check_generalization
from babysit.checks.task import task_for
from babysit.nn import mlp
from babysit.train import Callback

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


def test_each_epoch_records_the_accuracy_on_fixed_samples_at_the_epoch_end():
    x, y, vx, vy = checkup_grid.digits_standardized()
    sample = min(len(vx), 1024)
    seen = []

    class Snapshot(Callback):
        def on_epoch_end(self, state, metrics):
            model = state.model.eval()
            with torch.no_grad():
                train_acc = (model(x[:sample]).argmax(1) == y[:sample]).float().mean()
                val_acc = (model(vx[:sample]).argmax(1) == vy[:sample]).float().mean()
            model.train()
            seen.append((metrics["epoch"], metrics["train_loss"], float(train_acc), float(val_acc)))

    torch.manual_seed(0)
    _, m = check_generalization(
        mlp(64, [32], 10),
        (x, y),
        (vx, vy),
        CE,
        lr=0.05,
        optimizer="sgd",
        epochs=3,
        min_steps=1,
        max_steps=1000,
        batch_size=64,
        callbacks=[Snapshot()],
    )
    keys = ("epoch", "train_loss", "train_accuracy", "val_accuracy")
    records = [tuple(r[k] for k in keys) for r in m["epochs"]]
    assert len(records) == 3
    for record, reference in zip(records, seen, strict=True):
        assert record == pytest.approx(reference, abs=1e-12)
