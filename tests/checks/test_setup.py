import math

import numpy as np
import pytest
import torch
from torch import nn

from babysit.checks.architecture_audit import audit_architecture
from babysit.checks.data_audit import CENTERING_RATIO_MAX, audit_data, input_statistics
from babysit.checks.init_audit import DEAD_FRACTION_MAX, audit_init
from babysit.checks.task import task_for
from babysit.nn import cnn, mlp
from babysit.probes import activation_stats
from babysit.probes.trace import trace


def _data(model, x, y, loss_fn=None):
    task = task_for(loss_fn)
    t = trace(model, x[:512])
    return audit_data(x, y, task, t.output, t)


def _codes(findings):
    return {f.code for f in findings}


def _arch(model, x, loss_fn=None):
    t = trace(model, x)
    return audit_architecture(t, task_for(loss_fn), t.output)


def _init(model, x, y, loss_fn=None):
    t = trace(model, x)
    stats = activation_stats(model, x, y, loss_fn=loss_fn)
    return audit_init(stats, t)


# --- data ---------------------------------------------------------------------------------


def test_input_statistics_match_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, 4, 4, generator=g) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    x = x + 5
    stats = input_statistics(x)
    f = x.flatten(1).double().numpy()
    mean, std = f.mean(0), f.std(0, ddof=1)
    assert stats["mean_rms"] == pytest.approx(np.sqrt((mean**2).mean()))
    assert stats["std_rms"] == pytest.approx(np.sqrt((std**2).mean()))
    assert stats["channel_std"] == pytest.approx(
        x.transpose(0, 1).flatten(1).double().std(1).tolist()
    )


def test_raw_digits_are_neither_centred_nor_scaled(digits_raw):
    torch.manual_seed(0)
    findings, stats = _data(mlp(64, [32], 10), *digits_raw)
    assert _codes(findings) == {"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}
    assert all(f.severity == "warning" and f.layer == "fc1" for f in findings)
    assert stats["offset_ratio"] > 2 * CENTERING_RATIO_MAX


def test_standardized_digits_pass_the_data_audit(digits_std):
    torch.manual_seed(0)
    findings, _ = _data(mlp(64, [32], 10), *digits_std)
    assert findings == []


def test_pixels_in_0_1_are_uncentred_but_scaled(digits_raw):
    x, y = digits_raw
    findings, _ = _data(mlp(64, [32], 10), x / 16, y)
    assert _codes(findings) == {"DATA_NOT_CENTERED"}


def test_the_audit_reads_the_inputs_the_network_sees():
    """A model that normalizes its input itself is not blamed for the raw data."""

    class Normalizing(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp(64, [32], 10)

        def forward(self, x):
            return self.body((x - 4.9) / 6.0)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 64, generator=g) * 16  # raw-looking, mean ~8
    y = torch.randint(0, 10, (300,), generator=g)
    findings, stats = _data(Normalizing(), x, y)
    assert "DATA_NOT_SCALED" not in _codes(findings)
    assert stats["std_rms"] < 1.0


def test_batchnorm_after_the_first_layer_softens_the_data_findings(digits_raw):
    torch.manual_seed(0)
    findings, _ = _data(mlp(64, [32], 10, batch_norm=True), *digits_raw)
    assert _codes(findings) == {"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}
    assert {f.severity for f in findings} == {"info"}


def test_nonfinite_inputs_are_counted_and_located(digits_std):
    x, y = digits_std
    x = x.clone()
    x[7, 0, 1, 1] = math.nan
    x[20, 0, 0, 0] = -math.inf
    findings, _ = _data(mlp(64, [32], 10), x, y)
    bad = [f for f in findings if f.code == "DATA_NONFINITE"]
    assert len(bad) == 1 and bad[0].severity == "error"
    assert bad[0].evidence == {"values": 2, "nan": 1, "examples": 2, "of": len(x)}
    assert "first at example 7" in bad[0].message


@pytest.mark.parametrize(
    ("labels", "loss_fn"),
    [
        (lambda y: y + 1, None),  # 10 with 10 outputs
        (lambda y: y - 1, None),  # -1
        (lambda y: y.float() + 0.5, None),  # not integers
        (lambda y: y.float()[:, None], nn.BCEWithLogitsLoss()),  # 0..9 for BCE
    ],
)
def test_labels_the_loss_cannot_use_are_invalid(digits_std, labels, loss_fn):
    x, y = digits_std
    out_units = 1 if isinstance(loss_fn, nn.BCEWithLogitsLoss) else 10
    findings, _ = _data(mlp(64, [16], out_units), x, labels(y), loss_fn)
    assert [f.code for f in findings] == ["LABELS_INVALID"]
    assert findings[0].severity == "error"


def test_ignore_index_labels_are_valid(digits_std):
    x, y = digits_std
    y = y.clone()
    y[:50] = -100
    findings, _ = _data(mlp(64, [16], 10), x, y)
    assert findings == []


@pytest.mark.parametrize("classes_first", [False, True], ids=["b_t_v", "b_v_t"])
def test_per_position_labels_are_judged_against_the_vocabulary(classes_first):
    """(B, T, V) or (B, V, T) scores against (B, T) tokens: C is V = 20, never T = 6."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator)
    y = torch.randint(0, 20, (8, 6), generator=generator)
    y[0, 0] = 19  # valid for V = 20, out of range for T = 6
    logits = torch.randn(8, 6, 20, generator=generator)
    if classes_first:
        logits = logits.transpose(1, 2)
    task = task_for(None)
    assert audit_data(x, y, task, logits)[0] == []
    y[1, 1] = 20
    findings, _ = audit_data(x, y, task, logits)
    assert _codes(findings) == {"LABELS_INVALID"}
    assert findings[0].evidence["classes"] == 20


def test_per_position_labels_of_more_examples_than_the_audit_batch_use_the_vocabulary():
    """The audit judges every label of the data against scores on its first examples only:
    (8, 6, 20) logits for (32, 6) tokens still mean V = 20, not T = 6."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    y = torch.randint(0, 20, (32, 6), generator=generator)
    logits = torch.randn(8, 6, 20, generator=generator)
    assert audit_data(x, y, task_for(None), logits)[0] == []


def test_soft_targets_must_be_distributions(digits_std):
    x, y = digits_std
    soft = nn.functional.one_hot(y, 10).float() * 0.9 + 0.01
    findings, _ = _data(mlp(64, [16], 10), x, soft)
    assert findings == []
    findings, _ = _data(mlp(64, [16], 10), x, soft * 2)
    assert _codes(findings) == {"LABELS_INVALID"}


# --- architecture -------------------------------------------------------------------------


def test_hidden_sigmoids_are_flagged_once_naming_the_first(digits_std):
    x, _ = digits_std
    findings = _arch(mlp(64, [32, 32, 32], 10, activation="sigmoid", init="xavier"), x[:64])
    hidden = [f for f in findings if f.code == "SIGMOID_HIDDEN"]
    assert len(hidden) == 1 and hidden[0].layer == "sigmoid1"
    assert hidden[0].evidence["layers"] == ["sigmoid1", "sigmoid2", "sigmoid3"]


def test_an_output_sigmoid_for_bce_and_a_sigmoid_gate_are_not_hidden():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    assert _arch(model, torch.randn(32, 8), nn.BCELoss()) == []

    class Gated(nn.Module):  # squeeze-and-excitation style: sigmoid scales features
        def __init__(self):
            super().__init__()
            self.fc, self.gate, self.act, self.out = (
                nn.Linear(8, 8),
                nn.Sigmoid(),
                nn.ReLU(),
                nn.Linear(8, 3),
            )

        def forward(self, x):
            h = self.act(self.fc(x))
            return self.out(h * self.gate(h))

    assert _arch(Gated(), torch.randn(32, 8)) == []


@pytest.mark.parametrize("squash", [nn.Softmax(dim=1), nn.Sigmoid(), nn.ReLU()])
def test_squashed_logits_before_cross_entropy(squash):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), squash)
    findings = _arch(model, torch.randn(32, 8))
    assert [f.code for f in findings] == ["OUTPUT_ACTIVATION"]
    assert findings[0].layer == "3"


def test_log_softmax_is_fine_before_cross_entropy_and_nll():
    model = nn.Sequential(nn.Linear(8, 4), nn.LogSoftmax(dim=1))
    assert _arch(model, torch.randn(32, 8)) == []
    assert _arch(model, torch.randn(32, 8), nn.NLLLoss()) == []


def test_nll_on_raw_scores_is_an_error():
    findings = _arch(nn.Sequential(nn.Linear(8, 4)), torch.randn(32, 8), nn.NLLLoss())
    assert [(f.code, f.severity) for f in findings] == [("OUTPUT_ACTIVATION", "error")]


def test_softmax_over_one_unit_and_cross_entropy_over_one_output_are_errors():
    one = nn.Sequential(nn.Linear(8, 1), nn.Softmax(dim=1))
    assert [f.severity for f in _arch(one, torch.randn(32, 8), nn.BCELoss())] == ["error"]
    single = nn.Sequential(nn.Linear(8, 1))
    assert [f.severity for f in _arch(single, torch.randn(32, 8))] == ["error"]


def test_linear_maps_in_a_row_are_flagged_through_batchnorm_and_dropout():
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.Dropout(0.1),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )
    findings = _arch(model, torch.randn(32, 8))
    assert [(f.code, f.evidence["layers"]) for f in findings] == [("NO_NONLINEARITY", ["0", "3"])]


def test_max_pooling_counts_as_a_nonlinearity():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    assert _arch(model, torch.randn(8, 1, 8, 8)) == []


def test_deep_nets_without_normalization_get_an_info():
    deep = mlp(16, [16] * 6, 3)
    assert [(f.code, f.severity) for f in _arch(deep, torch.randn(8, 16))] == [
        ("NO_NORMALIZATION", "info")
    ]
    assert _arch(mlp(16, [16] * 6, 3, batch_norm=True), torch.randn(8, 16)) == []


# --- init ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hidden", "activation", "init"),
    [
        ([100] * 6, "relu", "he"),
        ([100] * 6, "tanh", "xavier"),
        ([100] * 6, "leaky_relu", "he"),
        ([100] * 6, "relu", "orthogonal"),
        ([100] * 6, "relu", "small"),  # with batch norm below
    ],
)
def test_healthy_inits_raise_nothing(digits_std, hidden, activation, init):
    x, y = digits_std
    torch.manual_seed(0)
    model = mlp(64, hidden, 10, activation=activation, init=init, batch_norm=init == "small")
    findings, measurement = _init(model, x[:512], y[:512])
    assert findings == []
    assert 1 / 10 < measurement["forward_change"] < 10


def test_small_init_vanishes_from_the_second_layer(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    findings, measurement = _init(mlp(64, [100] * 6, 10, "tanh", "small"), x[:512], y[:512])
    assert [f.code for f in findings] == ["INIT_VANISHING"]
    assert findings[0].layer == "tanh2"
    assert "xavier" in findings[0].fix
    # Each 0.01 * randn layer of 100 units scales the std by 0.01 * sqrt(100) = 0.1.
    assert measurement["forward_change"] == pytest.approx(0.1**5, rel=0.5)


def test_xavier_under_deep_relu_vanishes_and_he_is_proposed(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    findings, measurement = _init(mlp(64, [100] * 12, 10, "relu", "xavier"), x[:512], y[:512])
    assert [f.code for f in findings] == ["INIT_VANISHING"]
    assert "He" in findings[0].fix
    # Xavier halves the second moment per ReLU layer: std x 1/sqrt(2) per layer.
    assert measurement["forward_change"] == pytest.approx(2 ** (-11 / 2), rel=0.6)


def test_large_init_explodes_relu_and_saturates_tanh(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    relu, _ = _init(mlp(64, [100] * 4, 10, "relu", "large"), x[:512], y[:512])
    assert [f.code for f in relu] == ["INIT_EXPLODING"]
    tanh, _ = _init(mlp(64, [100] * 4, 10, "tanh", "large"), x[:512], y[:512])
    assert "INIT_SATURATED" in _codes(tanh)


def test_overflow_at_init_is_an_error(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    model = mlp(64, [200] * 12, 10, "relu", "large")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(1000)  # ~1e4x per layer: float32 overflows by the 10th
    findings, _ = _init(model, x[:64], y[:64])
    assert [(f.code, f.severity) for f in findings] == [("INIT_EXPLODING", "error")]


def test_sigmoid_stack_vanishes_through_the_gradient(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    findings, measurement = _init(mlp(64, [100] * 8, 10, "sigmoid", "xavier"), x[:512], y[:512])
    assert [f.code for f in findings] == ["INIT_VANISHING"]
    assert measurement["backward_change"] < 1e-2 and measurement["forward_change"] > 0.1


def test_cnn_inits_across_depth(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    healthy, _ = _init(cnn(1, 8, [16, 32, 32], 10), x[:256], y[:256])
    assert healthy == []
    small, _ = _init(cnn(1, 8, [16] * 5, 10, init="small"), x[:256], y[:256])
    assert _codes(small) == {"INIT_VANISHING"}  # its dead units are folded into it
    assert "dead units" in small[0].message


def test_negative_biases_kill_relu_units(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    model = mlp(64, [100, 100], 10)
    with torch.no_grad():
        model.fc2.bias.fill_(-100.0)
    findings, _ = _init(model, x[:512], y[:512])
    dead = [f for f in findings if f.code == "DEAD_UNITS"]
    assert dead and dead[0].severity == "error" and dead[0].layer == "relu2"
    assert "fc2" in dead[0].message and dead[0].evidence["threshold"] == DEAD_FRACTION_MAX


def test_zero_and_constant_init_are_symmetric(digits_std):
    x, y = digits_std
    for value in (0.0, 0.1):
        model = mlp(64, [32, 32], 10)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        findings, _ = _init(model, x[:64], y[:64])
        assert [(f.code, f.severity) for f in findings] == [("INIT_SYMMETRIC", "error")]


def test_a_zero_last_layer_is_not_symmetric(digits_std):
    """Zero logits weights are fine: the targets tell the classes apart after one step."""
    x, y = digits_std
    torch.manual_seed(0)
    model = mlp(64, [32, 32], 10)
    with torch.no_grad():
        model.logits.weight.zero_()
    findings, _ = _init(model, x[:64], y[:64])
    assert findings == []


def test_one_constant_layer_before_a_random_one_is_a_warning(digits_std):
    x, y = digits_std
    torch.manual_seed(0)
    model = mlp(64, [32, 32], 10, activation="tanh", init="xavier")
    with torch.no_grad():
        model.fc1.weight.fill_(0.05)
    findings, _ = _init(model, x[:64], y[:64])
    assert [(f.code, f.severity, f.layer) for f in findings] == [
        ("INIT_SYMMETRIC", "warning", "fc1")
    ]


def test_frozen_parameters_are_reported_and_all_frozen_is_a_warning():
    from babysit.checks.architecture_audit import frozen_parameters

    model = mlp(64, [32, 32], 10)
    assert frozen_parameters(model) == []
    model.fc1.weight.requires_grad_(False)
    model.fc1.bias.requires_grad_(False)
    (finding,) = frozen_parameters(model)
    assert finding.code == "FROZEN_PARAMETERS" and finding.severity == "info"
    assert finding.evidence == {"frozen": ["fc1.weight", "fc1.bias"], "parameters": 6}
    for p in model.parameters():
        p.requires_grad_(False)
    (finding,) = frozen_parameters(model)
    assert finding.severity == "warning" and "nothing in the model can learn" in finding.message


def _overflowing_relu_net(hidden: int) -> nn.Module:
    """A ReLU net whose first Linear sends 5 of its 8 units to -inf on positive inputs: the
    ReLU after it outputs 0 there, exactly, whatever CPU kernel computes it."""
    layers: list[nn.Module] = [nn.Linear(4, 8), nn.ReLU()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(8, 8), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[:5].fill_(-1e38)
        model[0].bias.zero_()
    return model


@pytest.mark.parametrize("hidden", [1, 3])
def test_units_zeroed_by_an_overflow_are_not_called_dead(hidden):
    torch.manual_seed(0)
    model = _overflowing_relu_net(hidden)
    x = 1 + torch.rand(64, 4)
    y = torch.randint(0, 3, (64,))
    stats = {s.name: s for s in activation_stats(model, x, y)}
    assert stats["0"].nonfinite and not stats["1"].nonfinite
    assert stats["1"].dead_fraction >= 5 / 8 > DEAD_FRACTION_MAX  # what the old rule judged
    findings, _ = _init(model, x, y)
    assert [(f.code, f.severity, f.layer) for f in findings] == [("INIT_EXPLODING", "error", "0")]


# --- integer inputs (token ids) -----------------------------------------------------------


def _token_batch(n=64, length=8, vocab=50):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n, length), generator=generator)
    model = nn.Sequential(nn.Embedding(vocab, 16), nn.Flatten(), nn.Linear(16 * length, 3))
    return model, ids, torch.randint(0, 3, (n,), generator=generator)


def test_token_ids_are_never_judged_for_centring_or_scale():
    """Ids 0..49 have mean ~25 and std ~14: as numbers they would be flagged twice."""
    model, ids, y = _token_batch()
    assert input_statistics(ids.float())["offset_ratio"] > CENTERING_RATIO_MAX
    t = trace(model, ids)
    findings, stats = audit_data(ids, y, task_for(None), t.output, t)
    assert findings == [] and stats["integer_inputs"] is True


def test_flagged_token_ids_are_not_standardized_for_the_model_audits():
    from babysit.checks.base import Context
    from babysit.checks.findings import Finding
    from babysit.doctor import Budget

    model, ids, y = _token_batch()
    t = trace(model, ids)
    context = Context(
        model, task_for(None), ids, y, ids, y, torch.arange(64), (ids, y), t, Budget()
    )
    context.findings.append(Finding("DATA_NOT_CENTERED", "warning", "m", "f"))
    batch, note = context.audit_inputs()
    assert note == "" and batch.dtype == torch.int64 and torch.equal(batch, context.batch)


class _SoftmaxedTokens(nn.Module):
    """(B, T) ids -> per-position scores, softmaxed with torch.softmax (no module to see)."""

    def __init__(self, classes_first, softmax=True, vocab=20):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)
        self.classes_first, self.softmax = classes_first, softmax

    def forward(self, ids):
        scores = self.head(self.embed(ids))
        scores = scores.softmax(dim=-1) if self.softmax else scores
        return scores.transpose(1, 2) if self.classes_first else scores


@pytest.mark.parametrize("classes_first", [False, True], ids=["b_t_v", "b_v_t"])
def test_per_position_probabilities_are_an_output_activation(classes_first):
    torch.manual_seed(0)
    ids, targets = torch.randint(0, 20, (16, 6)), torch.randint(0, 20, (16, 6))
    for softmax in (False, True):
        model = _SoftmaxedTokens(classes_first, softmax)
        t = trace(model, ids)
        findings = audit_architecture(t, task_for(None), t.output, targets)
        assert _codes(findings) == ({"OUTPUT_ACTIVATION"} if softmax else set())
    assert "every position is >= 0 and sums to 1 over the 20 classes" in findings[0].message


class _SequenceClassifier(nn.Module):
    """(N, T, F) float features -> LSTM -> a Linear on the last state: the first weight
    layer the trace sees reads the LSTM's state, an internal feature, not the data."""

    def __init__(self, features=4, hidden=32):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(features, hidden, batch_first=True), nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


def test_the_audit_judges_the_data_not_an_internal_feature():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 10, 4, generator=g), torch.randint(0, 3, (128,), generator=g)
    torch.manual_seed(0)
    model = _SequenceClassifier()
    t = trace(model, x)
    assert t.first_weight_input[0].numel() != x[0].numel()  # the LSTM state (32,)
    findings, stats = audit_data(x, y, task_for(None), t.output, t)
    assert findings == [] and stats["seen_by"] is None
    assert stats["features"] == 40 and stats["std_rms"] == pytest.approx(1.0, abs=0.1)
    # The same audit on raw data: judged, and flagged, on the data itself.
    findings, stats = audit_data(x * 20 + 50, y, task_for(None), t.output, t)
    assert _codes(findings) == {"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}
