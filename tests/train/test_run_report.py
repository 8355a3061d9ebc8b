"""mon.report(): each planted loop bug or unhealthy run gets its code; healthy loops get no
warning. The runs are small MLPs on the bundled digits (standardized), a few hundred steps."""

import json
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


def _steps(digits, epochs=6, batch=64):
    return epochs * math.ceil(len(digits[0][0]) / batch)


def _adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _frozen_first_layer():
    model = _mlp()
    model[1].requires_grad_(False)
    return model


HEALTHY = {
    "sgd_momentum": lambda d: run_loop(d),
    "adam_batchnorm_dropout": lambda d: run_loop(
        d, model := _mlp(dropout=0.3, batch_norm=True), optimizer=_adam(model)
    ),
    "accumulation_on_purpose": lambda d: run_loop(d, accumulate=2),
    "frozen_first_layer_left_out": lambda d: run_loop(
        d,
        model := _frozen_first_layer(),
        optimizer=torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9
        ),
    ),
    "cosine": lambda d: run_loop(
        d,
        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=_steps(d)),
    ),
    "one_cycle": lambda d: run_loop(
        d,
        scheduler=lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.1, total_steps=_steps(d)
        ),
    ),
}


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_loops_get_no_warning(digits, name):
    report = HEALTHY[name](digits)
    assert isinstance(report := report.report(), Report)
    assert _warnings(report) == [], [f.message for f in report.findings]
    assert report.meta["kind"] == "training_run"


PLANTED = {
    "LR_TOO_LOW": dict(lr=1e-5),
    "LR_TOO_HIGH": dict(lr=3.0),
    "NAN_LOSS": dict(lr=3.0),
    "LOSS_EXPLODED": dict(lr=3.0),
    "LOSS_NOISY": dict(batch=2, epochs=1, lr=0.01),
    "OVERFITTING": dict(model_kw={"hidden": 256}, train_subset=60, epochs=40, batch=20),
    "UNDERFITTING": dict(model_kw={"hidden": 2}, epochs=20),
    "GRAD_ACCUMULATING": dict(bug="no_zero_grad", lr=0.01),
    "PARAMS_NOT_UPDATED": dict(bug="not_in_optimizer"),
    "EVAL_MODE_TRAINING": dict(bug="eval_mode", model_kw={"dropout": 0.3}),
}


@pytest.mark.parametrize("code", PLANTED)
def test_each_unhealthy_run_gets_its_code(digits, code):
    kw = dict(PLANTED[code])
    model = _mlp(**kw.pop("model_kw", {}))
    report = run_loop(digits, model, **kw).report()
    assert code in report.codes, [(f.code, f.message) for f in report.findings]
    finding = next(f for f in report.findings if f.code == code)
    assert finding.message and finding.fix and finding.evidence


@pytest.mark.parametrize("bug", ["detached", "zero_between"])
def test_parameters_cut_off_from_their_gradient_are_not_updated(digits, bug):
    report = run_loop(digits, bug=bug).report()
    finding = next(f for f in report.findings if f.code == "PARAMS_NOT_UPDATED")
    expected = {"1.weight", "1.bias"} if bug == "detached" else {"1.weight", "3.weight"}
    assert expected <= set(finding.evidence["parameters"])


def test_a_per_epoch_scheduler_stepped_per_batch_is_a_learning_rate_too_low(digits):
    report = run_loop(
        digits, scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.1)
    ).report()
    assert _warnings(report) == ["LR_TOO_LOW"]
    assert report.findings[0].evidence["cause"] == "schedule"


def test_dead_units_growing_during_training_are_found(digits):
    """Planted: after every step the hidden layer's biases are pushed down a little, so that
    more ReLU units stop firing on every example as the run goes (what large updates do)."""
    (x, y), _ = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Monitor(model, opt) as mon:
        for step in range(200):
            index = torch.arange(64) + (step * 64) % (len(x) - 64)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model[1].bias -= 0.05
            mon.step(loss)
    report = mon.report()
    finding = next(f for f in report.findings if f.code == "DEAD_UNITS")
    assert finding.layer == "2" and finding.evidence["late"] >= 0.2 + finding.evidence["first"]


def test_a_monitor_that_sees_no_step_says_so():
    model = _mlp()
    with pytest.warns(RuntimeWarning, match="no mon.step"), Monitor(model) as mon:
        model(torch.randn(4, 64)).sum().backward()
    report = mon.report()
    assert report.codes == ["CHECK_SKIPPED"] and "no mon.step" in report.findings[0].message


def test_an_optimizer_that_never_steps_is_reported():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="never stepped"), Monitor(model, opt) as mon:
        for _ in range(3):
            loss = model(torch.randn(4, 64)).pow(2).mean()
            loss.backward()
            mon.step(loss)
    assert "CHECK_SKIPPED" in mon.report().codes


def test_report_mid_run_and_from_a_saved_history_agree(digits, tmp_path):
    from babysit.checks.training_run import check_training_run
    from babysit.train import load_history

    mon = run_loop(digits, lr=1e-5)
    mon.save_jsonl(tmp_path / "history.jsonl")
    findings, _ = check_training_run(load_history(tmp_path / "history.jsonl"))
    assert [f.to_dict() for f in findings] == [f.to_dict() for f in mon.report().findings]
    Report.from_dict(mon.report().to_dict())  # the JSON round trip holds


def test_babysit_report_reads_a_saved_run_and_reports_its_codes(digits, tmp_path, capsys):
    from babysit.cli import main

    run_loop(digits, bug="no_zero_grad", lr=0.01).save_jsonl(tmp_path / "history.jsonl")
    assert main(["report", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "GRAD_ACCUMULATING" in [f["code"] for f in printed["findings"]]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["meta"]["kind"] == "training_run" and saved["findings"] == printed["findings"]
    assert (tmp_path / "report.html").is_file()
    # run again: the report is recomputed from the history, not mistaken for a checkup's
    assert main(["report", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == printed["findings"]


def test_babysit_report_on_a_broken_history_is_a_one_line_error(tmp_path, capsys):
    from babysit.cli import main

    (tmp_path / "history.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("babysit: error:") and "history.jsonl:2 is not a JSON line" in err
    assert len(err.splitlines()) == 1


def test_the_run_report_html_draws_the_lectures_figures(digits, tmp_path):
    from babysit.cli import main

    mon = run_loop(digits, epochs=2)
    page = mon.report().save(tmp_path).read_text()
    figures = ["run_loss", "run_accuracy", "run_update_ratios", "run_histograms", "run_filters"]
    for name in figures:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert page.count("data:image/png;base64,") == len(figures)
    first = json.loads((tmp_path / "report.json").read_text())["measurements"]["training_run"]
    weight = mon.model[1].weight.detach()
    assert first["first_layer"]["filters"][0][0] == weight[0].reshape(8, 8).tolist()
    # `babysit report` re-reads the history and keeps the filters of the saved report
    mon.save_jsonl(tmp_path / "history.jsonl")
    for name in figures:
        (tmp_path / f"{name}.png").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert all((tmp_path / f"{name}.png").is_file() for name in figures)
