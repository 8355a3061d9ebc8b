import math

import pytest
import torch
from torch import nn

from babysit.errors import UsageError
from babysit.nn import mlp
from babysit.train import Callback, LossAbort, evaluate, fit, make_optimizer


@pytest.fixture(scope="module")
def blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.randint(0, 4, (600,), generator=g)
    x = centers[y] + torch.randn(600, 16, generator=g)
    return (x[:500], y[:500]), (x[500:], y[500:])


def test_fit_learns_separable_blobs(blobs):
    train, val = blobs
    model = mlp(16, [32], 4)
    history = fit(model, train, val, epochs=5, lr=0.05, optimizer="momentum")
    assert history.epochs[-1]["val_accuracy"] > 0.95
    assert history.step_loss[-1] < history.step_loss[0] / 4
    assert len(history.step_loss) == 5 * math.ceil(500 / 64)


def test_fit_is_reproducible_with_a_seed(blobs):
    train, _ = blobs
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = mlp(16, [32], 4, dropout=0.3)
        runs.append(fit(model, train, epochs=2, lr=0.05, seed=7).step_loss)
    assert runs[0] == runs[1]


def test_fit_accepts_a_dataset_through_a_dataloader(blobs):
    train, val = blobs

    class ListDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(train[0])

        def __getitem__(self, i):
            return train[0][i], train[1][i]

    history = fit(mlp(16, [32], 4), ListDataset(), val, epochs=2, lr=0.05, optimizer="adam")
    assert history.epochs[-1]["val_accuracy"] > 0.9


class _Split(nn.Module):
    """Takes its 16 features in two halves, `model(a, b)` or `model(left=a, right=b)`, and
    returns a Hugging Face style dict of scores."""

    def __init__(self):
        super().__init__()
        self.net = mlp(16, [32], 4)

    def forward(self, left, right):
        return {"logits": self.net(torch.cat([left, right], 1)), "hidden": None}


@pytest.mark.parametrize("layout", ["tuple", "dict", "dataset"])
def test_fit_takes_tuple_and_dict_inputs_and_reads_dict_outputs(blobs, layout):
    """The same run as on plain (x, y): the split inputs reach the model as model(*x) or
    model(**x), and its scores are read from the dict's "logits"."""
    (x, y), (vx, vy) = blobs
    halves = (x[:, :8], x[:, 8:])
    train = {
        "tuple": (halves, y),
        "dict": ({"left": halves[0], "right": halves[1]}, y),
        "dataset": [({"left": a, "right": b}, t) for a, b, t in zip(*halves, y, strict=True)],
    }[layout]
    val = ((vx[:, :8], vx[:, 8:]), vy)
    torch.manual_seed(0)
    split = _Split()
    torch.manual_seed(0)
    plain = mlp(16, [32], 4)
    history = fit(split, train, val, epochs=2, lr=0.05, shuffle=layout != "dataset")
    reference = fit(plain, (x, y), (vx, vy), epochs=2, lr=0.05, shuffle=layout != "dataset")
    assert history.step_loss == pytest.approx(reference.step_loss, rel=1e-5)
    assert history.epochs[-1]["val_accuracy"] == reference.epochs[-1]["val_accuracy"] > 0.9


def test_fit_forward_says_how_to_call_the_model(blobs):
    (x, y), _ = blobs
    torch.manual_seed(0)
    model = mlp(16, [32], 4)
    calls = []

    def forward(model, inputs):
        calls.append(type(inputs).__name__)
        return model(inputs["features"])

    history = fit(model, ({"features": x}, y), epochs=1, lr=0.05, forward=forward)
    assert calls == ["dict"] * len(history.step_loss)


def test_callbacks_are_called_in_order_and_can_stop(blobs):
    train, _ = blobs
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, state):
            calls.append("begin")

        def on_batch_end(self, state, loss):
            calls.append(state.step)
            if state.step == 3:
                state.stop("enough")

        def on_train_end(self, state):
            calls.append("end")

    history = fit(mlp(16, [8], 4), train, epochs=3, lr=0.01, callbacks=[Recorder()])
    assert calls == ["begin", 1, 2, 3, "end"]
    assert history.stop_reason == "enough" and len(history.step_loss) == 3


def test_loss_abort_stops_a_diverging_run_within_a_few_steps(blobs):
    train, _ = blobs
    history = fit(mlp(16, [32], 4), train, epochs=5, lr=100.0, callbacks=[LossAbort()])
    assert history.stopped and len(history.step_loss) <= 5
    assert "initial loss" in history.stop_reason or "nan" in history.stop_reason.lower()


def test_loss_abort_leaves_a_healthy_run_alone(blobs):
    train, _ = blobs
    history = fit(mlp(16, [32], 4), train, epochs=2, lr=0.05, callbacks=[LossAbort()])
    assert not history.stopped


def test_max_steps_bounds_the_run(blobs):
    train, _ = blobs
    history = fit(mlp(16, [32], 4), train, epochs=100, lr=0.05, max_steps=17)
    assert len(history.step_loss) == 17


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_optimizers_by_name(name):
    opt = make_optimizer(name, nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=1e-4)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 1e-4
    if name in ("momentum", "nesterov"):
        assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0].get("nesterov", False) == (name == "nesterov")


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="unknown optimizer 'sgdd'"):
        make_optimizer("sgdd", nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(UsageError, match="learning rate"):
        make_optimizer("sgd", nn.Linear(2, 2).parameters(), lr=-1)


def test_evaluate_restores_mode_and_reports_accuracy(blobs):
    _, val = blobs
    model = mlp(16, [8], 4)
    model.train()
    metrics = evaluate(model, val)
    assert model.training and set(metrics) == {"loss", "accuracy"}
    regression = evaluate(
        nn.Linear(16, 1), (val[0], torch.randn(100, 1)), loss_fn=nn.functional.mse_loss
    )
    assert set(regression) == {"loss"}


def test_loss_abort_names_the_step_that_tripped_even_when_checked_late():
    losses = [2.0, 2.5, 7.0, 3.0, 1.0, 1.0]

    abort = LossAbort(check_every=4)

    class FakeState:
        def __init__(self):
            self.step, self.should_stop, self.reason = 0, False, None

        def stop(self, reason):
            self.should_stop, self.reason = True, reason

    state = FakeState()
    abort.on_train_begin(state)
    for value in losses:
        state.step += 1
        abort.on_batch_end(state, torch.tensor(value))
        if state.should_stop:
            break
    assert state.step == 4  # read back at the 4th step only
    assert state.reason == "loss 7 exceeded 3x the initial loss 2 at step 3"
