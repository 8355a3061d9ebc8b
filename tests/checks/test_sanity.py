import math

import pytest
import torch
from torch import nn

from babysit.checks.initial_loss import INIT_LOSS_RATIO_MAX, check_initial_loss
from babysit.checks.learnable import check_learnable
from babysit.checks.runs import recalibrate_batchnorm
from babysit.checks.sanity import (
    OVERFIT_EXAMPLES,
    check_overfit,
    check_regularization,
    percent,
)
from babysit.checks.task import achievable_accuracy, task_for
from babysit.nn import mlp
from tests.zoo.resnet import resnet18

CE = task_for(None)


def _model(hidden=(64, 64), **kw):
    torch.manual_seed(0)
    return mlp(64, list(hidden), 10, **kw)


# --- initial loss -------------------------------------------------------------------------


def test_small_last_layer_starts_at_ln_c(digits_std):
    x, y = digits_std
    model = _model(init="small")
    findings, m = check_initial_loss(model, x[:512], y[:512], CE)
    assert findings == []
    assert m["expected"] == pytest.approx(math.log(10))
    # With 0.01 * randn weights the logits are ~0, so the loss is ln(10) (CS231n's 2.302).
    assert m["loss"] == pytest.approx(math.log(10), abs=1e-3)


def test_an_oversized_last_layer_is_a_mismatch(digits_std):
    x, y = digits_std
    model = _model()
    with torch.no_grad():
        model.logits.weight.mul_(20)
    findings, m = check_initial_loss(model, x[:512], y[:512], CE)
    assert [f.code for f in findings] == ["INIT_LOSS_MISMATCH"]
    assert m["ratio"] > INIT_LOSS_RATIO_MAX
    assert "ln(10) = 2.303" in findings[0].message


class _TokenScorer(nn.Module):
    """(B, T) ids -> (B, T, V) scores, or (B, V, T) with `classes_first`."""

    def __init__(self, vocab, classes_first):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, 16), nn.Linear(16, vocab)
        self.classes_first = classes_first

    def forward(self, ids):
        scores = self.head(self.embed(ids))
        return scores.transpose(1, 2) if self.classes_first else scores


@pytest.mark.parametrize("classes_first", [False, True], ids=["b_t_v", "b_v_t"])
def test_per_position_scores_start_at_ln_v_per_position(classes_first):
    """V = 50 tokens over T = 6 positions: the reference is ln(50), never ln(6)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (64, 6))
    targets = torch.randint(0, 50, (64, 6))
    model = _TokenScorer(50, classes_first)
    with torch.no_grad():
        model.head.weight.mul_(0.01)
    findings, m = check_initial_loss(model, ids, targets, CE)
    assert findings == [] and m["classes"] == 50
    assert m["expected"] == pytest.approx(math.log(50))
    logits = model(ids).detach()
    spread = logits.std(dim=1 if classes_first else 2).mean()
    assert m["logit_std"] == pytest.approx(float(spread), rel=1e-5)
    with torch.no_grad():
        model.head.weight.mul_(3000)
    findings, m = check_initial_loss(model, ids, targets, CE)
    assert [f.code for f in findings] == ["INIT_LOSS_MISMATCH"]
    assert "ln(50) = 3.912 for 50 classes per position" in findings[0].message


def test_bce_starts_at_ln_2(digits_std):
    x, y = digits_std
    keep = y < 2
    torch.manual_seed(0)
    model = mlp(64, [32], 1, init="small")
    task = task_for(nn.BCEWithLogitsLoss())
    findings, m = check_initial_loss(model, x[keep], y[keep].float()[:, None], task)
    assert findings == [] and m["expected"] == pytest.approx(math.log(2))


def test_regression_compares_output_and_target_scales():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 8, generator=g), torch.randn(256, 1, generator=g)
    torch.manual_seed(0)
    model = mlp(8, [32], 1)
    task = task_for(nn.MSELoss())
    assert check_initial_loss(model, x, y, task)[0] == []
    with torch.no_grad():
        model.logits.weight.mul_(50)
    findings, m = check_initial_loss(model, x, y, task)
    assert [f.code for f in findings] == ["INIT_LOSS_MISMATCH"]
    assert m["output_scale"] == pytest.approx(m["output_rms"] / m["target_rms"])


def test_a_model_that_computes_nan_is_reported(digits_std):
    x, y = digits_std

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return torch.log(self.fc(x.flatten(1)) - 1e6)  # log of a negative number

    findings, _ = check_initial_loss(Broken(), x[:64], y[:64], CE)
    assert [(f.code, f.severity) for f in findings] == [("NAN_LOSS", "error")]


def test_an_unknown_loss_steps_aside(digits_std):
    x, y = digits_std
    task = task_for(lambda out, t: out.pow(2).mean())
    findings, m = check_initial_loss(_model(), x[:64], y[:64], task)
    assert findings == [] and "skipped" in m


# --- overfit ------------------------------------------------------------------------------


def test_a_healthy_mlp_memorises_20_examples_fast(digits_std):
    x, y = digits_std
    findings, m = check_overfit(_model(), x, y, CE, steps=300)
    assert findings == [] and m["reached"]
    assert m["examples"] == OVERFIT_EXAMPLES
    assert m["final_accuracy"] == 1.0 and m["final_loss"] < 0.1 * m["initial_loss"]
    assert len(m["runs"]) == 1  # the first learning rate sufficed


def test_softmax_before_cross_entropy_cannot_overfit(digits_std):
    x, y = digits_std
    model = _model()
    model.add_module("softmax", nn.Softmax(dim=1))
    findings, m = check_overfit(model, x, y, CE, steps=150, hints=("OUTPUT_ACTIVATION",))
    assert [(f.code, f.severity) for f in findings] == [("CANNOT_OVERFIT", "error")]
    assert findings[0].fix.startswith("fix OUTPUT_ACTIVATION first")
    # log-softmax of probabilities in [0, 1] keeps the loss above ln(1 + 9/e) ~ 1.46.
    assert m["final_loss"] > math.log(1 + 9 / math.e) - 0.01


def test_a_frozen_model_cannot_overfit(digits_std):
    x, y = digits_std
    model = _model().requires_grad_(False)
    findings, _ = check_overfit(model, x, y, CE, steps=50)
    assert [(f.code, f.severity) for f in findings] == [("CANNOT_OVERFIT", "error")]
    assert "requires_grad" in findings[0].message


def test_overfit_does_not_touch_the_model(digits_std):
    x, y = digits_std
    model = _model(dropout=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_overfit(model, x, y, CE, steps=30)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model[3].p == 0.5  # dropout switched off on the copy only


def _shared_first_token(n=20, length=4, vocab=100):
    """n sequences of distinct tokens, except that sequences 0 and 1 start with the same
    token and continue differently: a model that reads one token at a time cannot get
    position 0 of both right, so 100% token accuracy is out of reach (79 of 80)."""
    ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[: n * length]
    ids = ids.view(n, length).clone()
    ids[1, 0] = ids[0, 0]
    targets = torch.roll(ids, -1, dims=1)
    return ids, targets


def test_per_position_overfit_is_judged_on_the_loss():
    ids, targets = _shared_first_token()
    assert achievable_accuracy(ids, targets, causal=True) == pytest.approx(79 / 80)
    torch.manual_seed(0)
    model = _TokenScorer(100, classes_first=False)
    findings, m = check_overfit(model, ids, targets, CE, steps=300)
    assert findings == [] and m["reached"] and m["accuracy_required"] is False
    assert m["final_accuracy"] < 1.0 and m["final_loss"] < 0.1 * m["initial_loss"]


def test_per_example_overfit_still_needs_every_example_right(digits_std):
    x, y = digits_std
    x, y = x[:OVERFIT_EXAMPLES], y[:OVERFIT_EXAMPLES].clone()
    x[1] = x[0]
    y[1] = (y[0] + 1) % 10  # one input, two labels: 95% at best
    findings, m = check_overfit(_model(), x, y, CE, steps=100)
    assert [f.code for f in findings] == ["CANNOT_OVERFIT"] and m["accuracy_required"]
    assert "training accuracy 95%" in findings[0].message
    assert "needs 100% and <" in findings[0].message


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0.995, "99.5%"),
        (0.9999, "99.99%"),
        (1.0, "100%"),
        (0.64, "64%"),
        (0.0, "0%"),
        (0.001, "0.1%"),
    ],
)
def test_accuracy_is_printed_unrounded_at_the_ends(fraction, text):
    assert percent(fraction) == text


# --- learnable labels ---------------------------------------------------------------------


def test_true_labels_are_learnable(digits_std):
    x, y = digits_std
    findings, m = check_learnable(_model(), x, y, CE, steps=100, batch_size=64)
    assert findings == [] and m["held_out_accuracy"] > 0.8


def test_shuffled_labels_are_not(digits_std):
    x, y = digits_std
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    findings, m = check_learnable(_model((100, 100)), x, y, CE, steps=150, batch_size=64)
    assert [(f.code, f.severity) for f in findings] == [("LABELS_UNLEARNABLE", "error")]
    assert m["linear_held_out_accuracy"] <= m["chance"] + m["margin"]


def _lstm(n=512, shuffled=False):
    from tests.zoo import zoo

    case = zoo.lstm_case(n=n)
    ids, labels = case.data
    if shuffled:
        labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(3))]
    return case.model, ids, labels


def test_embedding_lstm_labels_are_learnt_with_more_rounds_where_the_first_falls_short():
    """`x[:, 0] % 3` through an Embedding -> LSTM: held-out 36% after 100 Adam steps (chance
    1/3), so the copy trains on, in rounds, until it passes."""
    model, ids, labels = _lstm()
    findings, m = check_learnable(model, ids, labels, CE, steps=100, batch_size=32)
    assert findings == [], [f.message for f in findings]
    assert m["steps"] > 100 and m["held_out_accuracy"] > 0.6
    assert m["linear_held_out_accuracy"] > 0.9  # one-hot ids: the first one decides


def test_shuffled_labels_on_the_embedding_lstm_are_unlearnable():
    model, ids, labels = _lstm(shuffled=True)
    findings, m = check_learnable(model, ids, labels, CE, steps=100, batch_size=32)
    assert [(f.code, f.severity) for f in findings] == [("LABELS_UNLEARNABLE", "error")]
    assert m["linear_held_out_accuracy"] <= m["chance"] + m["margin"]


def test_the_linear_baseline_reads_ids_as_names_not_numbers():
    """Ids are one-hot encoded: label = first id mod 3 is linear in the one-hot columns, but
    not in the raw id values (what ridge regression on the numbers sees)."""
    from babysit.checks.runs import linear_baseline

    _, ids, labels = _lstm()
    accuracy = linear_baseline(ids[128:], labels[128:], ids[:128], labels[:128])
    raw = linear_baseline(ids[128:].float(), labels[128:], ids[:128].float(), labels[:128])
    assert accuracy > 0.95 and raw < 0.6


def test_one_hot_ids_match_torch_one_hot_and_pool_the_rare_ids():
    from babysit.checks.runs import LINEAR_MAX_FEATURES, one_hot_ids

    ids = torch.tensor([[0, 2], [2, 1], [1, 0]])
    fit, held = one_hot_ids(ids, torch.tensor([[1, 5]]))
    expected = nn.functional.one_hot(ids, 4).flatten(1)  # ids 0..2 and the "other" column
    assert torch.equal(fit, expected)
    assert torch.equal(held, torch.tensor([[0, 1, 0, 0, 0, 0, 0, 1]]))  # 5 is "other"
    wide = torch.randint(0, 10_000, (50, 64), generator=torch.Generator().manual_seed(0))
    fit, _ = one_hot_ids(wide, wide)
    assert fit.shape[1] <= LINEAR_MAX_FEATURES and bool((fit.sum(1) == 64).all())


def test_recalibrate_batchnorm_gives_the_exact_statistics_of_the_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g) * 7 + 3
    model = nn.Sequential(nn.BatchNorm1d(5, momentum=0.01), nn.Dropout(0.5), nn.Linear(5, 2))
    model.eval()
    assert recalibrate_batchnorm(model, x, batch_size=300)
    bn = model[0]
    torch.testing.assert_close(bn.running_mean, x.mean(0))
    torch.testing.assert_close(bn.running_var, x.var(0))  # unbiased, as BatchNorm keeps it
    assert bn.momentum == 0.01 and not model.training and not model[1].training
    assert not recalibrate_batchnorm(mlp(5, [4], 2), x, batch_size=64)  # no BatchNorm


def test_an_early_stopping_learnable_run_does_not_score_the_untrained_copy(digits_std):
    """A scaled checkup scores the copy every 10 steps: the first scoring of the held-out
    part (a forward without gradients) comes after the first training step, not before it
    (an untrained copy cannot pass, and each scoring costs a third of a step per example),
    and is made as the final score is (eval mode), so that a copy that passes there is
    scored once; the fixed budget's run still scores before its first step, in train mode,
    and again at the end."""
    x, y = digits_std

    def events(stop_early, hidden=(256, 256)):
        model, seen = _model(hidden), []

        def hook(module, args, output):
            grad = torch.is_grad_enabled()
            seen.append(("train" if grad else "score" if module.training else "eval", len(args[0])))

        model.register_forward_hook(hook)
        findings, m = check_learnable(
            model, x, y, CE, steps=100, batch_size=64, stop_early=stop_early
        )
        held = m["held_out_examples"]  # scored: the held-out part, no gradients
        return findings, m, [k for k, n in seen if k == "train" or n == held]

    findings, m, seen = events(stop_early=True)  # passes at its first scoring
    assert findings == [] and m["steps"] == 10
    assert seen[0] == "train" and [k for k in seen if k != "train"] == ["eval"]
    assert m["train_accuracy"] is None  # the seen examples only explain a finding
    findings, m, seen = events(stop_early=True, hidden=(64, 64))  # at its second
    assert findings == [] and m["steps"] == 20
    assert [k for k in seen if k != "train"] == ["eval", "score", "eval"]
    _, fixed_m, fixed = events(stop_early=False)
    assert fixed[0] == "score" and fixed[-1] == "eval"
    assert fixed_m["train_accuracy"] > 0.8


def _slow_batchnorm_resnet():
    """A width-4 CIFAR ResNet-18 whose BatchNorm running averages move slowly (momentum
    0.01), so that after a short run they are stale: they still describe the init."""
    torch.manual_seed(0)
    model = resnet18(10, width=4, channels=1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.01
    return model


def test_learnable_scores_batchnorm_models_with_statistics_of_their_trained_weights(digits_raw):
    x, y = digits_raw
    x, y = x[:600] * 16, y[:600]  # raw 0..255 images
    findings, m = check_learnable(_slow_batchnorm_resnet(), x, y, CE, steps=60, batch_size=64)
    # with the running statistics left as trained, it scored 13% (linear 92%), and nothing
    # was reported
    assert m["batchnorm_recalibrated"] and m["held_out_accuracy"] > 0.5, m
    assert findings == []


@pytest.mark.parametrize("stop_early", [False, True])
def test_a_model_far_below_a_linear_classifier_is_a_finding(digits_raw, monkeypatch, stop_early):
    import babysit.checks.learnable as learnable

    x, y = digits_raw
    x, y = x[:600] * 16, y[:600]
    monkeypatch.setattr(learnable, "recalibrate_batchnorm", lambda *args: False)
    findings, m = check_learnable(
        _slow_batchnorm_resnet(), x, y, CE, steps=60, batch_size=64, stop_early=stop_early
    )
    assert [(f.code, f.severity) for f in findings] == [("WORSE_THAN_LINEAR", "warning")]
    assert f"({m['train_accuracy']:.0%})" in findings[0].message  # what it did on seen ones
    evidence = findings[0].evidence
    assert evidence["held_out_accuracy"] < evidence["needed"] < m["linear_held_out_accuracy"]
    assert m["linear_held_out_accuracy"] > 0.8  # the labels are learnt by a linear model


def test_learnable_steps_aside_for_regression():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 8, generator=g), torch.randn(400, 1, generator=g)
    findings, m = check_learnable(
        mlp(8, [8], 1), x, y, task_for(nn.MSELoss()), steps=5, batch_size=64
    )
    assert findings == [] and "skipped" in m


# --- regularization -----------------------------------------------------------------------


def test_weight_decay_raises_the_fitted_loss(digits_std):
    x, y = digits_std
    findings, m = check_regularization(_model(), x, y, CE, steps=50)
    assert findings == [] and m["rise"] > 0.1
    assert m["decayed"]["weight_norm"] < m["plain"]["weight_norm"]


class FixedGainClassifier(nn.Module):
    """Weight-normalized logits with a fixed gain: shrinking W changes nothing."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10, bias=False)

    def forward(self, x):
        w = self.fc.weight / self.fc.weight.norm(dim=1, keepdim=True)
        return 10 * self.flatten(x) @ w.T / 8


def test_decay_on_scale_free_weights_has_no_effect(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    findings, m = check_regularization(FixedGainClassifier(), x, y, CE, steps=50)
    assert [f.code for f in findings] == ["REG_NO_EFFECT"]
    assert "shrank" in findings[0].message  # the weights shrank, the loss did not care
