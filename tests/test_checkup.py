"""babysit.checkup end to end: the contract (inputs, Report shape), the default digits set-up,
and the promises: the user's model and torch's RNG are left as they were, a failing check
never stops the others, bad input is one UsageError."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import babysit as bs
from babysit.data.preprocess import Standardize
from babysit.doctor import Budget
from babysit.errors import UsageError
from babysit.report.report import Report

# Small steps budgets keep these end-to-end tests to a second or two each; the thresholds
# are calibrated at the default budget in tests/checks/test_calibration.py.
SMALL = Budget(overfit_steps=200, learnable_steps=100, range_steps=60, lr_steps=60)


@pytest.fixture(autouse=True)
def one_torch_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits():
    train, val = bs.load_data("digits")
    return train, val


@pytest.fixture(scope="module")
def standardized(digits):
    train, val = digits
    t = Standardize().fit(train.tensors[0])
    return (
        (t.transform(train.tensors[0]), train.tensors[1]),
        (t.transform(val.tensors[0]), val.tensors[1]),
    )


def _model():
    torch.manual_seed(0)
    return bs.nn.default_model((1, 8, 8), 10)


def test_default_model_on_raw_digits_reports_the_data_and_nothing_else(digits):
    report = bs.checkup(_model(), digits[0])
    loud = {f.code for f in report.findings if f.severity != "info"}
    assert loud == {"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}
    assert report.ok
    assert report.measurements["data"]["model_audits_on"] == "standardized inputs"
    scaled = next(f for f in report.findings if f.code == "DATA_NOT_SCALED")
    assert scaled.evidence["initial_loss_as_given"] > 2 * math.log(10)


def test_standardized_digits_raise_no_warning(standardized):
    report = bs.checkup(_model(), standardized[0], budget=SMALL)
    assert [f for f in report.findings if f.severity != "info"] == []
    assert report.summary == {"error": 0, "warning": 0, "info": 1}
    assert report.codes == ["LR_SUGGESTION"]


def test_the_model_and_the_global_rng_are_left_as_they_were(standardized):
    model = _model()
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    bs.checkup(model, standardized[0], budget=SMALL)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_checkup_is_reproducible(standardized):
    a = bs.checkup(_model(), standardized[0], budget=SMALL, seed=3)
    b = bs.checkup(_model(), standardized[0], budget=SMALL, seed=3)
    assert a.measurements["lr_range"]["loss"] == b.measurements["lr_range"]["loss"]
    assert [f.message for f in a.findings] == [f.message for f in b.findings]


def test_threads_are_restored(standardized):
    torch.set_num_threads(2)
    report = bs.checkup(_model(), standardized[0], budget=SMALL, threads=1)
    assert torch.get_num_threads() == 2 and report.meta["threads"] == 1


def test_a_map_style_dataset_and_numpy_arrays_are_accepted(standardized):
    x, y = standardized[0]

    class Items(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], int(y[i])

    from_dataset = bs.checkup(_model(), Items(), budget=SMALL)
    from_numpy = bs.checkup(_model(), (x.numpy(), y.numpy()), budget=SMALL)
    assert from_dataset.ok and from_numpy.ok


def test_a_crashing_check_becomes_check_failed_and_the_rest_runs(standardized, monkeypatch):
    import babysit.checks.sanity as module

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(module, "check_regularization", broken)
    report = bs.checkup(_model(), standardized[0], budget=SMALL)
    failed = [f for f in report.findings if f.code == "CHECK_FAILED"]
    assert len(failed) == 1 and "regularization could not run: RuntimeError: boom" in (
        failed[0].message
    )
    assert "\n" not in failed[0].message
    assert "lr_range" in report.measurements  # later steps still ran
    assert failed[0].check == "regularization"  # shown in the row of the check that failed


def test_full_mode_adds_a_training_run(standardized):
    report = bs.checkup(
        _model(),
        standardized[0],
        val_data=standardized[1],
        quick=False,
        budget=Budget(
            overfit_steps=200, learnable_steps=100, range_steps=60, lr_steps=60, full_min_steps=200
        ),
    )
    training = report.measurements["training"]
    assert training["train_accuracy"] > 0.95 and training["val_accuracy"] > 0.9
    assert report.ok


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda d: bs.checkup("not a model", d), "torch.nn.Module"),
        (lambda d: bs.checkup(_model(), d, optimizer="lbfgs"), "unknown optimizer"),
        (lambda d: bs.checkup(_model(), d, lr=-1.0), "lr must be a positive number"),
        (lambda d: bs.checkup(_model(), d, threads=0), "threads"),
        (lambda d: bs.checkup(nn.Linear(10, 2), d), "the model fails on a batch"),
        (lambda d: bs.checkup(_model(), (d[0][:0], d[1][:0])), "empty"),
        (  # 0/1 targets shaped (N,) against 10 outputs
            lambda d: bs.checkup(
                _model(), (d[0], (d[1] % 2).float()), loss_fn=nn.BCEWithLogitsLoss()
            ),
            "the loss BCEWithLogitsLoss fails",
        ),
        (
            lambda d: bs.checkup(_model(), d, loss_fn=nn.CrossEntropyLoss(reduction="none")),
            "scalar",
        ),
    ],
)
def test_bad_input_is_one_usage_error(standardized, call, match):
    """Input the checkup cannot work with at all is refused at the boundary, in one line."""
    with pytest.raises(UsageError, match=match) as error:
        call(standardized[0])
    assert "\n" not in str(error.value)


class _Masked(nn.Module):
    """Reads a dict: `pixel_values` (the data) and a `mask` that zeroes some features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(64, [32], 10)

    def forward(self, pixel_values, mask):
        return self.net(pixel_values.flatten(1) * mask)


def test_dict_inputs_are_filtered_and_audited_on_their_main_input(standardized):
    """NaN rows in the dict's `pixel_values` are found and left out, the mask is not judged
    as data, and the model is called model(**inputs) on the finite examples."""
    x, y = standardized[0]
    x = x[:400].clone()
    x[[3, 70]] = math.nan
    inputs = {"pixel_values": x, "mask": torch.ones(400, 64)}
    budget = Budget(audit_examples=64, overfit_steps=5, learnable_steps=5, batch_size=32)
    report = bs.checkup(_Masked(), (inputs, y[:400]), budget=budget)
    nonfinite = [f for f in report.findings if f.code == "DATA_NONFINITE"]
    assert len(nonfinite) == 1 and nonfinite[0].evidence["examples"] == 2
    assert nonfinite[0].evidence["of"] == 400
    assert "CHECK_FAILED" not in report.codes
    shapes = "inputs {pixel_values: (1, 8, 8) float32, mask: (64,) float32}"
    assert report.meta["data"].endswith(shapes)


def test_report_json_round_trips_and_is_strict(standardized):
    report = bs.checkup(_model(), standardized[0], budget=SMALL)
    text = report.to_json()
    data = json.loads(text)  # strict JSON: NaN would not parse as a number here
    assert set(data) == {"findings", "summary", "measurements", "meta"}
    assert "NaN" not in text and "Infinity" not in text
    again = Report.from_dict(data)
    assert again.to_dict() == report.to_dict()
    assert np.isfinite(data["meta"]["duration_s"])


def test_labels_a_loss_cannot_use_are_a_finding_not_an_exception(standardized):
    x, y = standardized[0]
    report = bs.checkup(
        _model(),
        (x, y.float()[:, None].expand(-1, 10) * 1.0),
        loss_fn=nn.BCEWithLogitsLoss(),
        budget=SMALL,
    )
    assert [f.code for f in report.findings if f.severity == "error"] == ["LABELS_INVALID"]
    assert not report.ok


# --- real set-ups from outside the project (issue 10) --------------------------------------


def _autoencoder() -> nn.Module:
    """The published 64-32-16-8-16-32-64 ReLU autoencoder, torch's default init."""
    torch.manual_seed(0)
    dims = [64, 32, 16, 8, 16, 32, 64]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_a_narrow_relu_autoencoder_that_trains_gets_no_warning(standardized):
    x = standardized[0][0].flatten(1)
    report = bs.checkup(_autoencoder(), (x, x.clone()), loss_fn=nn.MSELoss(), budget=SMALL)
    assert [f.code for f in report.findings if f.severity != "info"] == [], str(report)
    dead = [f for f in report.findings if f.code == "DEAD_UNITS"]
    assert dead and "narrow" in dead[0].message  # still reported, as info
    suggestion = report.measurements["lr_range"]["suggestion"]
    assert suggestion is None or suggestion > 1e-3  # SGD trains it at 0.05, not at 1e-5


@pytest.mark.slow  # ~15 s; the fast variant is tests/checks/test_lr.py's fallback-rate test
def test_a_resnet_with_a_detached_trunk_is_caught_with_default_arguments(standardized):
    from tests.zoo.resnet import resnet18

    x, y = standardized[0]
    x, y = x[:600], y[:600]
    torch.manual_seed(0)
    model = resnet18(10, width=4, channels=1, detach_trunk=True)
    report = bs.checkup(
        model,
        (x, y),
        budget=Budget(
            overfit_steps=100, learnable_steps=60, reg_steps=20, range_steps=40, lr_steps=30
        ),
    )
    low = [f for f in report.findings if f.code == "UPDATE_RATIO_LOW"]
    assert low and "conv1" in low[0].evidence["ratios"], str(report)
    suggestion = next(f for f in report.findings if f.code == "LR_SUGGESTION")
    assert "nothing is learnt" not in suggestion.message


def test_a_range_test_that_finds_nothing_never_contradicts_the_other_checks():
    from babysit.checks.learning_rate import _learnt_elsewhere, _suggestion_finding

    failed = {"start_loss": 2.4, "min_loss": 2.3, "steps": 300, "suggestion": None}
    measured = {"learnable": {"held_out_accuracy": 0.97, "chance": 0.11, "margin": 0.04}}
    learnt = _learnt_elsewhere(measured)
    finding = _suggestion_finding(failed, "sgd", {"fallback": 0.01}, learnt)
    assert "97%" in finding.message and "nothing is learnt" not in finding.message
    assert "fallback lr 0.01" in finding.message and "lr=" in finding.fix
    at_chance = {"learnable": {"held_out_accuracy": 0.1, "chance": 0.11, "margin": 0.04}}
    assert _learnt_elsewhere(at_chance) is None
    finding = _suggestion_finding(failed, "sgd", {"fallback": 0.01}, None)
    assert "no other check saw the model learn" in finding.message
