"""The update ratios judge attention, embeddings and small-init layers as such (docs/checkup.md,
"Layer kinds"): a BERT-style attention's query/key/value are one ratio, layers under a
LayerNorm are not "too high", a weight below torch's default scale is judged against that
scale; and nothing is lost from detection: a detached attention or query, an embedding
initialised 100x too large, a rate 10x too high still get their codes."""

import sys
from pathlib import Path

import pytest
import torch

import babysit as bs
from babysit.checks.lr import UPDATE_RATIO_MAX, UPDATE_RATIO_MIN, _ratio_findings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import zoo  # noqa: E402

AUDIT, FIT = zoo.AUDIT, zoo.FIT


def _encoder_data():
    return zoo.token_labels(512, vocab=20)


def _codes(report):
    return {f.code for f in report.findings if f.severity in ("error", "warning")}


def _ratio_finding(report, code):
    return next(f for f in report.findings if f.code == code)


def test_a_bert_style_encoder_at_a_good_rate_gets_no_ratio_warning():
    """Separate query/key projections (~0 gradient at init) are judged with their value and
    output projections; the 0.02 embeddings under the LayerNorm and the 0.02 head are not
    "too high". Before: UPDATE_RATIO_LOW on query/key (2e-6), UPDATE_RATIO_HIGH on the
    embeddings and the head (0.13-0.46)."""
    torch.manual_seed(0)
    report = bs.checkup(zoo.TokenEncoder(std=0.02), _encoder_data(), budget=FIT, lr=0.05)
    ratios = report.measurements["lr"]["run"]["update_ratios"]
    assert "attention" in ratios and "attention.query" not in ratios
    assert UPDATE_RATIO_MIN < ratios["attention"] < UPDATE_RATIO_MAX
    assert not {"UPDATE_RATIO_LOW", "UPDATE_RATIO_HIGH"} & _codes(report)


def test_a_detached_attention_is_still_flagged():
    torch.manual_seed(0)
    model = zoo.TokenEncoder(std=0.02, detach_attention=True)
    report = bs.checkup(model, _encoder_data(), budget=AUDIT, lr=1e-2, optimizer="adam")
    assert {"UPDATE_RATIO_LOW", "PARAMS_NOT_UPDATED"} <= _codes(report)
    low = _ratio_finding(report, "UPDATE_RATIO_LOW").evidence["ratios"]
    assert set(low) == {"attention.query", "attention.key", "attention.value", "attention.out"}
    assert set(low.values()) == {0.0}


def test_a_detached_query_is_judged_alone_and_flagged():
    torch.manual_seed(0)
    model = zoo.TokenEncoder(std=0.02, detach_query=True)
    report = bs.checkup(model, _encoder_data(), budget=AUDIT, lr=1e-2, optimizer="adam")
    assert {"UPDATE_RATIO_LOW", "PARAMS_NOT_UPDATED"} <= _codes(report)
    assert _ratio_finding(report, "UPDATE_RATIO_LOW").evidence["ratios"] == {
        "attention.query": 0.0
    }
    unchanged = _ratio_finding(report, "PARAMS_NOT_UPDATED").message
    assert "attention.query.weight" in unchanged and "attention.key.weight" not in unchanged


def test_an_embedding_initialised_100x_too_large_is_still_ratio_low():
    """Embedding -> LSTM, the table N(0, 100) instead of torch's N(0, 1): its ratio falls
    ~1000x (7e-6 -> 3e-9 measured)."""
    torch.manual_seed(0)
    model = zoo.RecurrentClassifier(vocab=zoo.LABEL_VOCAB)
    torch.nn.init.normal_(model.embedding.weight, std=100.0)
    report = bs.checkup(model, zoo.token_labels(512), budget=FIT)
    assert "UPDATE_RATIO_LOW" in _codes(report)
    assert "embedding" in _ratio_finding(report, "UPDATE_RATIO_LOW").evidence["ratios"]


@pytest.mark.parametrize(
    "build, data, lr",
    [
        (lambda: zoo.TokenEncoder(std=0.02), _encoder_data, 0.5),
        (lambda: zoo.RecurrentClassifier(vocab=zoo.LABEL_VOCAB), zoo.token_labels, 1.0),
    ],
    ids=["bert-style-encoder", "embedding-lstm"],
)
def test_a_rate_10x_too_high_is_still_ratio_high(build, data, lr):
    """10x a rate with no ratio finding (SGD 0.05 for the encoder, 0.1 for the LSTM, whose
    loss barely moves there): the small-init head outgrows torch's default scale and is
    judged plainly. Measured before and after the roles: the same code."""
    torch.manual_seed(0)
    report = bs.checkup(build(), data(), budget=FIT, lr=lr)
    assert "UPDATE_RATIO_HIGH" in _codes(report)


def test_the_default_scale_and_the_normalized_layers_lower_only_the_too_high_judgment():
    ratios = {"small": 0.3, "plain": 0.3, "normed": 0.3, "silent": 1e-7, "ok": 1e-3}
    scales = {"small": 0.2, "silent": 0.2}
    found = _ratio_findings(ratios, 0.1, "the given", None, {"normed"}, scales)
    codes = {f.code: set(f.evidence["ratios"]) for f in found}
    assert codes == {"UPDATE_RATIO_HIGH": {"plain"}, "UPDATE_RATIO_LOW": {"silent"}}
    found = _ratio_findings(ratios, 0.1, "the given", None, set())
    assert {f.code: set(f.evidence["ratios"]) for f in found}["UPDATE_RATIO_HIGH"] == {
        "small",
        "plain",
        "normed",
    }


def _sgd_parameter_updates(model, ids, labels, steps=5, lr=0.05):
    from babysit.checks.params import gradient_norms, parameter_updates, snapshot

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    before, grads = snapshot(model), {}
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(ids), labels).backward()
        grads = gradient_norms(model)
        optimizer.step()
    return parameter_updates(before, snapshot(model), grads)


@pytest.mark.parametrize("fused", [False, True], ids=["softmax", "sdpa"])
def test_an_attentions_key_bias_is_not_params_not_updated(fused):
    """The key bias gets a true-zero gradient (softmax ignores a shift common to all keys),
    computed as ~1e-9: with torch's default (non-zero) bias, SGD never moves it. Not a
    parameter outside the optimizer; one that is outside still is."""
    from babysit.checks.params import check_params_updated

    torch.manual_seed(0)
    ids, labels = zoo.token_labels(64, vocab=20)
    measured = _sgd_parameter_updates(zoo.TokenEncoder(fused=fused), ids, labels)
    assert measured["parameters"]["attention.key.bias"]["change"] == 0
    assert check_params_updated(measured) == []
    measured["parameters"]["head.weight"]["change"] = 0.0  # as if left out of the optimizer
    found = check_params_updated(measured)
    assert [f.code for f in found] == ["PARAMS_NOT_UPDATED"]
    assert found[0].evidence["unchanged"] == ["head.weight"]
