"""mon.report(): each planted loop bug or unhealthy run gets its code; healthy loops get no
warning. The runs are small MLPs on the bundled digits (standardized), a few hundred steps."""

import math

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.data.preprocess import Standardize
from babysit.report.report import Report
from babysit.train import Monitor


@pytest.fixture(scope="module")
def digits():
    train, val = bs.load_data("digits")
    scale = Standardize().fit(train.tensors[0])
    return (
        (scale.transform(train.tensors[0]), train.tensors[1]),
        (scale.transform(val.tensors[0]), val.tensors[1]),
    )


def _mlp(hidden=64, dropout=0.0, batch_norm=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(nn.ReLU())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, 10))
    return nn.Sequential(*layers)


def run_loop(
    digits,
    model=None,
    *,
    optimizer=None,
    lr=0.05,
    epochs=6,
    batch=64,
    bug=None,
    scheduler=None,
    accumulate=1,
    train_subset=None,
    seed=0,
):
    """A plain loop under a Monitor; `bug` plants one of the loop bugs. Returns the Monitor."""
    (x, y), (xv, yv) = digits
    if train_subset is not None:
        x, y = x[:train_subset], y[:train_subset]
    model = model if model is not None else _mlp()
    if optimizer is None:
        params = model.parameters()
        if bug == "not_in_optimizer":
            params = list(model[-1].parameters())
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    sched = scheduler(optimizer) if scheduler is not None else None
    g = torch.Generator().manual_seed(seed)
    if bug == "eval_mode":
        model.eval()
    with Monitor(model, optimizer) as mon:
        for epoch in range(1, epochs + 1):
            if bug != "eval_mode":
                model.train()
            for i, index in enumerate(torch.randperm(len(x), generator=g).split(batch), 1):
                out = model(x[index])
                if bug == "detached":
                    out = model[-1](model[:-1](x[index]).detach())
                loss = nn.functional.cross_entropy(out, y[index])
                (loss / accumulate).backward()
                if i % accumulate == 0:
                    if bug == "zero_between":
                        optimizer.zero_grad()
                    optimizer.step()
                    if bug != "no_zero_grad":
                        optimizer.zero_grad()
                    if sched is not None and getattr(sched, "per", "batch") == "batch":
                        sched.step()
                mon.step(loss)
            if sched is not None and getattr(sched, "per", "batch") == "epoch":
                sched.step()
            model.eval()
            with torch.no_grad():
                train_accuracy = (model(x).argmax(1) == y).float().mean()
                val_accuracy = (model(xv).argmax(1) == yv).float().mean()
            mon.log(epoch=epoch, train_accuracy=train_accuracy, val_accuracy=val_accuracy)
    return mon


def _warnings(report):
    return sorted({f.code for f in report.findings if f.severity in ("warning", "error")})
