"""checks.params: PARAMS_NOT_UPDATED from snapshots, gradients and the optimizer."""

import torch
from torch import nn
from torch.nn import functional as F

from babysit.checks.params import (
    check_params_updated,
    gradient_norms,
    optimizer_parameter_names,
    parameter_updates,
    snapshot,
)


class LSTMClassifier(nn.Module):
    def __init__(self, vocab=20, width=8, classes=3, detach=False):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.fc = nn.Linear(width, classes)
        self.detach = detach

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        last = out[:, -1]
        return self.fc(last.detach() if self.detach else last)


def _run(model, steps=3, optimizer=None, clear_before_step=False):
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (16, 5))
    y = torch.randint(0, 3, (16,))
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    before, grads = snapshot(model), {}
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(ids), y).backward()
        grads = gradient_norms(model)
        if clear_before_step:
            optimizer.zero_grad()
        optimizer.step()
    names = optimizer_parameter_names(model, optimizer)
    return parameter_updates(before, snapshot(model), grads, names)


def test_a_healthy_lstm_updates_every_parameter():
    torch.manual_seed(0)
    assert check_params_updated(_run(LSTMClassifier())) == []


def test_a_detached_lstm_trunk_is_named():
    torch.manual_seed(0)
    found = check_params_updated(_run(LSTMClassifier(detach=True)))
    assert [f.code for f in found] == ["PARAMS_NOT_UPDATED"]
    assert found[0].severity == "error"  # as the Monitor's PARAMS_NOT_UPDATED on a run
    names = set(found[0].evidence["no_gradient"])
    assert names == {
        "embedding.weight",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.bias_ih_l0",
        "lstm.bias_hh_l0",
    }
    assert ".detach()" in found[0].fix


def test_a_module_left_out_of_the_optimizer_is_named():
    torch.manual_seed(0)
    model = LSTMClassifier()
    partial = torch.optim.SGD(model.fc.parameters(), lr=0.1)
    found = check_params_updated(_run(model, optimizer=partial))
    assert [f.code for f in found] == ["PARAMS_NOT_UPDATED"]
    assert "not in the optimizer" in found[0].message
    assert "embedding.weight" in found[0].evidence["not_in_optimizer"]
    assert "fc.weight" not in found[0].evidence["unchanged"]


def test_no_gradient_anywhere_is_an_error():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = snapshot(model)
    measurement = parameter_updates(before, snapshot(model), {"weight": None, "bias": None})
    found = check_params_updated(measurement)
    assert "nothing in the model can learn" in found[0].message


def test_a_learning_rate_that_moves_nothing_is_not_blamed_on_the_parameters():
    torch.manual_seed(0)
    model = LSTMClassifier()
    tiny = torch.optim.SGD(model.parameters(), lr=0.0)
    assert check_params_updated(_run(model, optimizer=tiny)) == []


def test_gradient_cleared_before_step_is_caught():
    torch.manual_seed(0)
    model = LSTMClassifier()
    fc_only = torch.optim.SGD(model.fc.parameters(), lr=0.1)
    trunk = torch.optim.SGD(
        [p for n, p in model.named_parameters() if not n.startswith("fc")], lr=0.1
    )

    class Both(torch.optim.Optimizer):  # fc steps; the trunk's gradient is cleared first
        def __init__(self):
            super().__init__(list(model.parameters()), {"lr": 0.1})

        def step(self, closure=None):
            trunk.zero_grad(set_to_none=True)
            fc_only.step()

    found = check_params_updated(_run(model, optimizer=Both()))
    assert [f.code for f in found] == ["PARAMS_NOT_UPDATED"]
    assert "cleared before the step" in found[0].message
