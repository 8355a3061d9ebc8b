"""The config objective trains real models with babysit.train.fit."""

import re

import pytest
import torch

from babysit.errors import UsageError
from babysit.nn import mlp
from babysit.search import Stage, search
from babysit.search.config import parse_config
from babysit.search.study import STEPS_ATTR
from babysit.train import LossAbort, fit

DATA = "synthetic:n=300,shape=8,classes=3,seed=2"


def _config(**space):
    return parse_config(
        {
            "data": DATA,
            "fixed": {"width": 16, "batch_size": 16, "optimizer": "sgd"},
            "space": space or {"lr": {"low": 1e-3, "high": 1e-1}},
        }
    )


def test_the_objective_returns_what_fit_reports_for_the_same_hyperparameters(tmp_path):
    config = _config()
    objective = config.objective()
    result = search(
        objective,
        {"lr": (1e-3, 1e-1)},
        [Stage(2, epochs=2)],
        storage=f"sqlite:///{tmp_path}/s.db",
    )
    trial = result.trials[0]
    torch.manual_seed(0)
    model = mlp(objective.input_shape, [16], objective.classes)
    history = fit(
        model, objective.train, objective.val, epochs=2, lr=trial.params["lr"],
        optimizer="sgd", batch_size=16, seed=0,
    )  # fmt: skip
    assert trial.value == history.last("val_accuracy")
    assert trial.user_attrs[STEPS_ATTR] == len(history.step_loss) == 2 * 15


def test_a_diverging_lr_is_pruned_at_the_step_babysit_train_loss_abort_trips(tmp_path):
    objective = _config().objective()
    lr = 40.0
    result = search(
        objective, {"lr": (lr, lr * 1.0001)}, [Stage(1, epochs=3)],
        storage=f"sqlite:///{tmp_path}/s.db",
    )  # fmt: skip
    trial = result.trials[0]
    assert trial.state.name == "PRUNED"
    # Reference: the training loop's own 3x abort on the same model, data and seed.
    torch.manual_seed(0)
    model = mlp(objective.input_shape, [16], objective.classes)
    history = fit(
        model, objective.train, objective.val, epochs=3, lr=trial.params["lr"],
        optimizer="sgd", batch_size=16, seed=0, callbacks=[LossAbort(check_every=1)],
    )  # fmt: skip
    abort_step = int(re.search(r"step (\d+)", history.stop_reason).group(1))
    assert trial.user_attrs[STEPS_ATTR] == abort_step < 3 * 15
    assert trial.user_attrs["prune_reason"].endswith(f"at step {abort_step}")


def test_the_cnn_builder_searches_channels_and_depth():
    config = parse_config(
        {
            "data": "synthetic:n=60,shape=1x8x8,classes=3",
            "model": "cnn",
            "space": {"width": {"low": 2, "high": 8}, "depth": [1, 2]},
        }
    )
    objective = config.objective()
    model = objective.build(objective.hyperparameters({"width": 5, "depth": 2}))
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [5, 5]


def test_the_cnn_builder_refuses_flat_data():
    config = parse_config(
        {"data": DATA, "model": "cnn", "space": {"lr": {"low": 1e-3, "high": 1e-1}}}
    )
    with pytest.raises(UsageError, match="needs images"):  # at once, before any trial
        config.objective()


def test_a_stage_budget_in_steps_trains_exactly_that_many_steps(tmp_path):
    objective = _config().objective()  # 240 training examples in batches of 16: 15 per epoch
    result = search(
        objective, {"lr": (1e-3, 1e-2)}, [Stage(1, steps=20)],
        storage=f"sqlite:///{tmp_path}/s.db",
    )  # fmt: skip
    (trial,) = result.trials
    assert trial.user_attrs[STEPS_ATTR] == 20
    assert sorted(trial.intermediate_values) == [1, 2]  # a full epoch, then 5 steps of one
