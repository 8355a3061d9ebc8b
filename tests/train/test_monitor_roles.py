"""The Monitor judges attention and normalized layers as the checkup does (docs/monitor.md,
"Layer roles"): the roles are read from its first step's graph, an attention's query, key
and value weights are one ratio (`update_ratio_groups`), and its report judges the group in
their place; nothing is lost from detection (a detached attention, a rate 10x too high)."""

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from babysit.checks.training_run import check_training_run
from babysit.train import Monitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import zoo  # noqa: E402

RATIO_CODES = {"UPDATE_RATIO_LOW", "UPDATE_RATIO_HIGH"}
QKV = ["attention.query.weight", "attention.key.weight", "attention.value.weight"]


def _train(model, data, lr, steps=100, call=None, penalty=0.0, loss_given=None, **monitor):
    """SGD on random batches of 32 under the Monitor; `penalty` adds an L2 term on every
    parameter to the loss (a hand-written weight decay)."""
    ids, labels = data
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    with Monitor(model, optimizer, **monitor) as mon:
        for _ in range(steps):
            batch = torch.randint(0, len(labels), (32,), generator=g)
            out = call(model, ids[batch]) if call else model(ids[batch])
            loss = nn.functional.cross_entropy(out, labels[batch])
            if penalty:
                loss = loss + penalty * sum(p.square().sum() for p in model.parameters())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.step(loss if loss_given is None else loss_given(loss))
    return mon


def _warnings(mon):
    return {f.code for f in mon.report().findings if f.severity in ("error", "warning")}


def _encoder_data():
    return zoo.token_labels(512, vocab=20)


def _bert(lr):
    case = zoo.bert_case()
    return _train(
        case.model, zoo.token_labels(256), lr, call=lambda model, x: model(input_ids=x).logits
    )


def test_a_healthy_bert_under_the_monitor_gets_no_update_ratio_warning():
    """SGD 0.064, 100 steps. Before: UPDATE_RATIO_LOW on both layers' query and key weights
    (6.5e-7 to 8.4e-7): softmax attention is near uniform at init."""
    torch.manual_seed(0)
    mon = _bert(0.064)
    (roles,) = [r["roles"] for r in mon.history if "roles" in r]
    group = "bert.encoder.layer.0.attention.self"
    assert roles["attention"][group] == [f"{group}.{p}.weight" for p in ("query", "key", "value")]
    assert "bert.embeddings.word_embeddings.weight" in roles["normalized"]
    groups = [r["update_ratio_groups"] for r in mon.history if "update_ratio_groups" in r]
    assert len(groups) == 10 and set(groups[0]) == {group, group.replace("0", "1")}
    assert not RATIO_CODES & _warnings(mon)


def test_a_rate_10x_too_high_on_bert_is_still_flagged():
    torch.manual_seed(0)
    assert "LR_TOO_HIGH" in _warnings(_bert(0.64))


def test_the_written_out_encoder_under_the_monitor_gets_no_update_ratio_warning():
    """Before: UPDATE_RATIO_LOW on attention.query/key (2.9e-7)."""
    torch.manual_seed(0)
    mon = _train(zoo.TokenEncoder(std=0.02), _encoder_data(), 0.05)
    first = mon.history[0]
    assert first["roles"]["attention"] == {"attention": QKV}
    assert {"tok.weight", "pos.weight", "attention.out.weight"} <= set(first["roles"]["normalized"])
    assert set(first["update_ratio_groups"]) == {"attention"}
    assert "update_ratios" in first and "attention.query.weight" in first["update_ratios"]
    assert not RATIO_CODES & _warnings(mon)


def test_the_group_ratio_is_the_norm_of_the_change_over_the_norm_of_the_weights():
    """One SGD step, against the weights before and after it, by hand."""
    torch.manual_seed(0)
    model = zoo.TokenEncoder()
    ids, labels = _encoder_data()
    weights = [model.attention.query.weight, model.attention.key.weight]
    weights.append(model.attention.value.weight)
    before = [w.detach().clone() for w in weights]
    mon = _train(model, (ids, labels), 0.5, steps=1)
    changes = [(w.detach() - b).square().sum() for w, b in zip(weights, before, strict=True)]
    change = math.sqrt(float(sum(changes)))
    norm = math.sqrt(sum(float(b.square().sum()) for b in before))
    (record,) = mon.history
    assert record["update_ratio_groups"]["attention"] == pytest.approx(change / norm, rel=1e-5)
    query = float((weights[0].detach() - before[0]).norm() / before[0].norm())
    assert record["update_ratios"]["attention.query.weight"] == pytest.approx(query, rel=1e-5)


def test_the_roles_come_from_the_steps_own_graph_without_an_extra_forward():
    """The model runs once per step; the role hooks are gone after the first step; a
    detached loss (as the Lightning and Hugging Face callbacks pass) still gives the roles:
    they are read from the model's outputs."""
    torch.manual_seed(0)
    model = zoo.TokenEncoder(std=0.02)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    mon = _train(model, _encoder_data(), 0.05, steps=3, loss_given=lambda loss: loss.detach())
    assert len(calls) == 3
    assert mon._roles._recorder is None
    assert mon.history[0]["roles"]["attention"] == {"attention": QKV}
    assert [r["step"] for r in mon.history if "roles" in r] == [1]


def test_a_detached_attention_is_still_flagged():
    """Detached from the residual sum, the attention's weights get no gradient: they never
    change (PARAMS_NOT_UPDATED); with an L2 penalty in the loss (and torch's default, non-zero
    biases, which the penalty moves too) they shrink only by it, at 2 lr x 1e-5 = 1e-6 a
    step: UPDATE_RATIO_LOW on each (no group: no attention is in the graph of the outputs)."""
    torch.manual_seed(0)
    data = _encoder_data()
    mon = _train(zoo.TokenEncoder(std=0.02, detach_attention=True), data, 0.05)
    assert "PARAMS_NOT_UPDATED" in _warnings(mon)
    torch.manual_seed(0)
    mon = _train(zoo.TokenEncoder(detach_attention=True), data, 0.05, penalty=1e-5)
    assert mon.history[0]["roles"]["attention"] == {}
    low = [f for f in mon.report().findings if f.code == "UPDATE_RATIO_LOW"]
    assert {f.layer for f in low} == {"attention.query", "attention.key", "attention.value"} | {
        "attention.out"
    }
    assert all(f.evidence["median"] == pytest.approx(1e-6, rel=0.01) for f in low)


def _record(step, ratios, groups=None, scales=None, roles=None):
    record = {"step": step, "loss": 1.0, "update_ratios": ratios}
    if groups:
        record["update_ratio_groups"] = groups
    if scales:
        record["below_default_scale"] = scales
    if roles:
        record["roles"] = roles
    return record


def test_the_report_judges_groups_normalized_and_small_weights_as_the_checkup():
    """The checkup's rule (babysit.checks.lr `_ratio_findings`) on the records: a group's
    ratio in place of its members', no "too high" under a normalization, "too high" against
    torch's default scale for a weight below it."""
    roles = {"attention": {"att": ["att.q.weight", "att.k.weight"]}, "normalized": ["n.weight"]}
    ratios = {
        "att.q.weight": 1e-7,
        "att.k.weight": 1e-7,
        "n.weight": 0.3,
        "small.weight": 0.3,
        "plain.weight": 0.3,
        "silent.weight": 1e-7,
    }
    records = [
        _record(
            s,
            ratios,
            groups={"att": 1e-3},
            scales={"small.weight": 0.2, "att.q.weight": 0.5},
            roles=roles if s == 1 else None,
        )
        for s in (1, 2, 3)
    ]
    findings, _ = check_training_run(records)
    found = {(f.code, f.layer) for f in findings if f.code in RATIO_CODES}
    assert found == {("UPDATE_RATIO_HIGH", "plain"), ("UPDATE_RATIO_LOW", "silent")}
    records = [_record(s, ratios, groups={"att": 1e-7}, roles=roles) for s in (1, 2)]
    low = [f for f in check_training_run(records)[0] if f.code == "UPDATE_RATIO_LOW"]
    assert {f.layer for f in low} == {"att", "silent"}
    (group,) = [f for f in low if f.layer == "att"]
    assert group.evidence["parameters"] == ["att.q.weight", "att.k.weight"]
    assert "att.q.weight, att.k.weight, as one" in group.message


def test_the_role_keys_cannot_be_logged():
    from babysit.errors import UsageError

    torch.manual_seed(0)
    mon = _train(zoo.TokenEncoder(), _encoder_data(), 0.05, steps=1)
    for key in ("roles", "update_ratio_groups", "below_default_scale"):
        with pytest.raises(UsageError, match=f"{key} cannot be logged"):
            mon.log(**{key: 1.0})
