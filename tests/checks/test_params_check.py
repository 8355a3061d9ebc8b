"""The checkup's PARAMS_NOT_UPDATED: a few steps of a copy at the learning-rate check's rate."""

import torch
from torch import nn

import babysit as bs
from babysit.doctor import Budget

BUDGET = Budget(overfit_steps=30, learnable_steps=20, reg_steps=10, range_steps=30, lr_steps=30)


def _data():
    train, _ = bs.load_data("synthetic:n=300,shape=16,classes=4")
    return train


class Detached(nn.Module):
    """The trunk's output is detached before the head: the trunk never gets a gradient."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.trunk(x).detach())


def test_a_detached_trunk_is_params_not_updated_in_the_lr_row():
    torch.manual_seed(0)
    report = bs.checkup(Detached(), _data(), lr=0.05, budget=BUDGET)
    found = [f for f in report.findings if f.code == "PARAMS_NOT_UPDATED"]
    assert len(found) == 1 and found[0].check == "params"
    assert found[0].evidence["no_gradient"] == ["trunk.0.weight", "trunk.0.bias"]
    assert [title for title, _, f in report.check_rows() if found[0] in f] == ["learning rate"]


def test_a_zero_initialised_last_layer_is_not_params_not_updated():
    """It passes no gradient back at the first step, but does from the second on."""
    torch.manual_seed(0)
    model = bs.nn.mlp(16, [32, 32], 4)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    report = bs.checkup(model, _data(), lr=0.05, budget=BUDGET)
    assert "PARAMS_NOT_UPDATED" not in report.codes
    first = next(iter(report.measurements["params"]["parameters"].values()))
    assert first["grad_norm"] > 0 and first["change"] > 0  # the first layer trained
