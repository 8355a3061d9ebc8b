"""The training-signal kit: one divergence rule, one optimizer registry, one fixed-batch
evaluation callback, and the shape rules of babysit/train."""

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import babysit.train as bt
from babysit.errors import UsageError
from babysit.nn import mlp
from babysit.search.pruner import LossRatioPruner
from babysit.train import (
    LOSS_ABORT_FACTOR,
    OPTIMIZER_REGISTRY,
    OPTIMIZERS,
    EvaluateEvery,
    LossAbort,
    Monitor,
    correct_count,
    diverged,
    divergence_reason,
    fit,
    make_optimizer,
    optimizer_help,
)

TRAIN = Path(bt.__file__).parent


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=g) * 3
    y = torch.randint(0, 3, (n,), generator=g)
    return centers[y] + torch.randn(n, 8, generator=g), y


# -- the divergence rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    "initial, loss, expected",
    [
        (2.0, 6.0, None),  # exactly 3x is not above 3x
        (2.0, 6.01, "loss 6.01 exceeded 3x the initial loss 2"),
        (2.0, math.nan, "loss became nan"),
        (2.0, math.inf, "loss became inf"),
        (-1.0, -0.5, None),  # a negative first loss gives no yardstick
        (0.0, 5.0, None),
        (None, 1e9, None),
    ],
)
def test_the_divergence_rule_on_host_and_device_agree(initial, loss, expected):
    assert LOSS_ABORT_FACTOR == 3.0
    assert divergence_reason(loss, initial) == expected
    if initial is not None:
        flag = diverged(torch.tensor(loss), torch.tensor(initial))
        assert bool(flag) == (expected is not None)
        assert LossRatioPruner().check(initial, loss) == expected


def test_loss_abort_the_monitor_and_the_pruner_use_one_rule_and_one_message():
    losses = [2.0, 1.5, 6.5, 7.0]
    # the loop's callback
    state = bt.TrainState(nn.Linear(1, 1), None, None, torch.device("cpu"), bt.History())
    abort = LossAbort()
    abort.on_train_begin(state)
    for step, value in enumerate(losses, start=1):
        state.step = step
        abort.on_batch_end(state, torch.tensor(value))
        if state.should_stop:
            break
    # the Monitor's guard
    model = nn.Linear(1, 1)
    with Monitor(model) as mon:
        for value in losses:
            mon.step(value)
    # the search's pruner
    pruner = LossRatioPruner().check(losses[0], losses[2])
    expected = "loss 6.5 exceeded 3x the initial loss 2"
    assert state.history.stop_reason == f"{expected} at step 3"
    assert mon.stop_reason == f"{expected} at step 3"
    assert pruner == expected


def test_loss_abort_does_not_stop_a_falling_negative_loss():
    """A log-likelihood loss can start below zero; 'above 3x a negative first loss' held for
    any falling loss, so LossAbort used to stop a healthy run at its second step."""
    x = torch.randn(64, 4)
    model = nn.Linear(4, 1)

    def negative_loss(out, _y):
        return out.pow(2).mean() - 10.0  # starts a little above -10 and falls towards it

    y = torch.zeros(64)
    history = fit(
        model,
        (x, y),
        epochs=2,
        lr=0.01,
        batch_size=16,
        loss_fn=negative_loss,
        callbacks=[LossAbort()],
        device="cpu",
    )
    assert history.stop_reason is None
    assert len(history.step_loss) == 8


def test_the_rule_exists_once_in_babysit_train():
    """No module of babysit/train but divergence.py spells the factor out or words the rule."""
    for path in TRAIN.glob("*.py"):
        text = path.read_text()
        if path.name == "divergence.py":
            continue
        assert "3.0" not in text.replace("LOSS_ABORT_FACTOR", ""), path.name
        assert "exceeded" not in text, path.name
    pruner = (TRAIN.parent / "search" / "pruner.py").read_text()
    assert "exceeded" not in pruner and "from babysit.train.divergence import" in pruner


# -- optimizers by name --------------------------------------------------------------------


def test_every_registered_optimizer_builds_its_torch_class_with_its_settings():
    expected = {
        "sgd": (torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
        "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
        "rmsprop": (torch.optim.RMSprop, {}),
    }
    assert OPTIMIZERS == tuple(OPTIMIZER_REGISTRY) == tuple(expected)
    for name, (cls, settings) in expected.items():
        opt = make_optimizer(name, nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=1e-4)
        assert type(opt) is cls
        group = opt.param_groups[0]
        assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4
        assert {k: group[k] for k in settings} == settings


def test_help_and_errors_name_every_registered_optimizer():
    text = optimizer_help()
    for name, spec in OPTIMIZER_REGISTRY.items():
        assert f"{name} ({spec.description})" in text
    with pytest.raises(UsageError) as e:
        make_optimizer("sgdd", nn.Linear(2, 2).parameters(), lr=0.1)
    assert str(e.value) == f"unknown optimizer 'sgdd'; choose one of {', '.join(OPTIMIZERS)}"


# -- one name per meaning ----------------------------------------------------------------


def test_correct_count_counts_and_the_ambiguous_name_is_gone():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert int(correct_count(logits, torch.tensor([0, 1, 1]))) == 2
    assert int(correct_count(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 1]))) == 1
    assert correct_count(logits, torch.rand(3, 2)) is None
    assert not hasattr(bt, "accuracy")


def test_callbacks_no_longer_import_the_loop():
    tree = ast.parse((TRAIN / "callbacks.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "babysit.train.loop" not in imported
    assert bt.loop.TrainState is bt.callbacks.TrainState  # old import paths keep working


# -- one fixed-batch evaluation callback ------------------------------------------------


def _error(model, x, y):
    return float((model(x).argmax(1) != y).float().mean())


def test_evaluate_every_measures_on_schedule_and_matches_a_direct_evaluation():
    x, y = _blobs()
    torch.manual_seed(0)
    model = mlp(8, [16], 3, dropout=0.5)
    probe_x, probe_y = x[:64], y[:64]
    snapshots = {}

    class Snapshot(bt.Callback):
        def on_batch_end(self, state, loss):
            if state.step % 3 == 0:
                snapshots[state.step] = {k: v.clone() for k, v in model.state_dict().items()}

    watch = EvaluateEvery(_error, (probe_x, probe_y), every=3, at_end=True)
    fit(model, (x, y), epochs=1, lr=0.1, batch_size=32, callbacks=[Snapshot(), watch])
    assert watch.steps == [0, 3, 6, 8]  # before training, every 3 steps, after the last
    reference = mlp(8, [16], 3, dropout=0.5)
    for step, value in zip(watch.steps[1:3], watch.values[1:3], strict=True):
        reference.load_state_dict(snapshots[step])
        reference.eval()  # eval mode: dropout off
        with torch.no_grad():
            assert value == _error(reference, probe_x, probe_y)
    assert model.training  # mode restored


def test_evaluate_every_in_train_mode_leaves_batchnorm_statistics_untouched():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _blobs()
    watch = EvaluateEvery(lambda m, xb: m(xb).std().item(), (x[:32] * 10 + 5,), mode="train")
    before = model[1].running_mean.clone()
    state = bt.TrainState(model, None, None, torch.device("cpu"), bt.History())
    model.eval()
    watch.on_train_begin(state)
    assert torch.equal(model[1].running_mean, before)
    assert not model.training and not model[1].training
    assert watch.values[0] == pytest.approx(
        nn.Sequential(*model).train()(x[:32] * 10 + 5).std().item(), rel=1e-6
    )


def test_evaluate_every_per_epoch_and_stop_when():
    x, y = _blobs()
    torch.manual_seed(0)
    model = mlp(8, [16], 3)
    watch = EvaluateEvery(
        _error,
        (x, y),
        per_epoch=True,
        at_start=False,
        stop_when=lambda error: error <= 0.2 and "reached 20% error",
    )
    history = fit(model, (x, y), epochs=50, lr=0.1, batch_size=32, callbacks=[watch])
    assert [e.epoch for e in watch.evaluations] == list(range(len(watch.evaluations)))
    assert watch.values[-1] <= 0.2 and all(v > 0.2 for v in watch.values[:-1])
    assert history.stop_reason == "reached 20% error"
    assert len(history.epochs) == len(watch.evaluations) < 50


def test_evaluate_every_rejects_a_bad_schedule():
    with pytest.raises(UsageError, match="every must be a positive integer or None, got 0"):
        EvaluateEvery(_error, every=0)


# -- the shape of babysit/train -------------------------------------------------------


def test_no_module_over_600_lines_and_no_function_over_100_lines():
    for path in TRAIN.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 100, f"{path.name}:{node.name} has {length} lines"


def test_the_lab_error_log_and_the_checkup_measure_are_a_few_lines_on_evaluate_every():
    """The four fixed-batch callbacks elsewhere can be rebuilt on EvaluateEvery: run each
    beside its rebuild in one fit, and they record the same numbers at the same steps."""
    from babysit.checks.runs import Measure
    from babysit.checks.task import accuracy, task_for
    from babysit.lab.measure import ErrorLog

    x, y = _blobs()
    task = task_for(None)
    torch.manual_seed(0)
    model = mlp(8, [16], 3, dropout=0.3)
    error_log = ErrorLog((x[:64], y[:64]), every=4, target=0.1, stop_at_target=False)
    error_rebuilt = EvaluateEvery(_error, (x[:64], y[:64]), every=4)
    measure = Measure(x[:64], y[:64], task, every=5, train_mode=False)
    measure_rebuilt = EvaluateEvery(
        lambda m, xb, yb: (float(task.loss(out := m(xb), yb)), accuracy(out, yb, task)),
        (x[:64], y[:64]),
        every=5,
        at_end=True,
    )
    fit(
        model,
        (x, y),
        epochs=2,
        lr=0.1,
        batch_size=32,
        callbacks=[error_log, error_rebuilt, measure, measure_rebuilt],
    )
    assert error_rebuilt.steps == error_log.steps
    assert error_rebuilt.values == error_log.errors
    assert [(e.step, *e.value) for e in measure_rebuilt.evaluations] == measure.records
