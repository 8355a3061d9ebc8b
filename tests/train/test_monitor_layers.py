"""The Monitor, the update ratios and the NaN reports on every layer kind of
babysit.nn.layers: default layers in forward order, the first non-finite layer named inside
recurrent and attention blocks, update ratios per layer against a hand computation."""

import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from babysit.checks.initial_loss import check_initial_loss
from babysit.checks.task import task_for
from babysit.checks.training_run import _judged_ratios, _median_weight_ratio
from babysit.train import Monitor
from babysit.train.measuring import UpdateRatioLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

from kinds import Tagger  # noqa: E402


def _setup(seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(0, 20, (16, 6))
    model = Tagger()
    return model, ids, ids[:, 0] % 3, torch.optim.SGD(model.parameters(), lr=0.1)


def _run(model, ids, y, optimizer, steps=6, plant=None, at=3, **kwargs):
    with Monitor(model, optimizer, **kwargs) as mon:
        for step in range(steps):
            if step == at and plant is not None:
                plant(model)
            loss = nn.functional.cross_entropy(model(ids), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.step(loss)
    return mon


def test_default_layers_are_every_kind_recorded_in_forward_order():
    model, ids, y, optimizer = _setup()
    mon = _run(model, ids, y, optimizer, steps=1)
    layers = mon.history[0]["layers"]
    names = ["embedding", "rnn", "norm", "attn", "rms", "proj", "head"]
    assert [r["name"] for r in layers] == names
    assert [r["depth"] for r in layers] == list(range(7))
    assert all(r["grad_std"] is not None for r in layers[1:])
    ratios = mon.history[0]["update_ratios"]
    assert {"rnn.weight_hh_l0", "attn.in_proj_weight", "proj.weight", "rms.weight"} <= set(ratios)


def _lstm_to_inf(model):
    with torch.no_grad():
        model.rnn.weight_ih_l0.fill_(float("inf"))


def _nan_mask(model):
    model.mask = torch.zeros(6, 6)
    model.mask[1, 2] = float("nan")


@pytest.mark.parametrize(("plant", "layer"), [(_lstm_to_inf, "rnn"), (_nan_mask, "attn")])
def test_nan_is_blamed_on_the_first_layer_in_forward_order(plant, layer):
    """The head is registered first and goes NaN too: the forward order names the culprit."""
    model, ids, y, optimizer = _setup()
    mon = _run(model, ids, y, optimizer, plant=plant)
    (alert,) = mon.alerts
    assert (alert["layer"], alert["where"], alert["onset_step"]) == (layer, "output", 4)
    assert f"output of {layer} at step 4" in alert["message"]


def test_nan_localisation_at_the_default_cadence_reads_back_no_more_often():
    model, ids, y, optimizer = _setup()
    mon = _run(model, ids, y, optimizer, steps=12, plant=_lstm_to_inf, at=7)
    (alert,) = mon.alerts
    assert (alert["layer"], alert["onset_step"]) == ("rnn", 8)


def _group_ratio(before, after):
    change = sum(float((a - b).norm()) ** 2 for b, a in zip(before, after, strict=True))
    return math.sqrt(change) / math.sqrt(sum(float(b.norm()) ** 2 for b in before))


def test_update_ratio_log_has_one_ratio_per_layer_equal_to_a_hand_computation():
    model, ids, y, optimizer = _setup()
    log = UpdateRatioLog(model)
    groups = {
        "head": ["head.weight"],
        "embedding": ["embedding.weight"],
        "rnn": ["rnn.weight_ih_l0", "rnn.weight_hh_l0"],
        "norm": ["norm.weight", "norm.bias"],
        "attn": ["attn.in_proj_weight", "attn.out_proj.weight"],
        "rms": ["rms.weight"],
        "proj": ["proj.weight"],
    }
    assert [name for name, _ in log.layers] == list(groups)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    log.on_batch_begin(None)
    loss = nn.functional.cross_entropy(model(ids), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log.on_batch_end(None, loss.detach())
    medians = log.medians()
    looked_up = ids.unique()  # plain SGD changes only these rows of the table
    before["embedding.weight"] = before["embedding.weight"][looked_up]
    params["embedding.weight"] = params["embedding.weight"][looked_up]
    for layer, names in groups.items():
        expected = _group_ratio([before[n] for n in names], [params[n].detach() for n in names])
        assert medians[layer] == pytest.approx(expected, rel=1e-4), layer


def test_embedding_ratio_is_over_the_rows_looked_up_whatever_the_vocabulary():
    ratios = []
    for vocab in (20, 5000):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(48, 3))
        unused = torch.randn(vocab - 20, 8)  # rows no batch looks up
        model[0] = nn.Embedding.from_pretrained(torch.cat([model[0].weight, unused]), False)
        ids = torch.randint(0, 20, (16, 6), generator=torch.Generator().manual_seed(1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        log = UpdateRatioLog(model)
        log.on_batch_begin(None)
        loss = nn.functional.cross_entropy(model(ids), ids[:, 0] % 3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.on_batch_end(None, loss.detach())
        ratios.append(log.medians()["0"])
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-5)


def test_run_median_ratio_counts_recurrent_and_attention_weights():
    ratios = {"rnn.weight_ih_l0": 1e-2, "rnn.weight_hh_l0": 1e-2, "fc.bias": 5.0}
    records = [{"update_ratios": ratios}]
    assert _median_weight_ratio(_judged_ratios(records)) == pytest.approx(1e-2)


def test_nan_loss_at_init_names_the_lstm_set_to_inf():
    model, ids, y, _ = _setup()
    _lstm_to_inf(model)
    (found,) = check_initial_loss(model, ids, y, task_for(None))[0]
    assert (found.code, found.layer) == ("NAN_LOSS", "rnn")
    assert "first layer whose output is non-finite is rnn (LSTM, whose parameters" in found.message


def test_the_documented_layer_kinds_example_prints_what_it_says(capsys):
    text = (Path(__file__).parents[2] / "docs" / "monitor.md").read_text()
    section = text.split("### Layer kinds", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/monitor.md", "exec"), {})
    expected = code.rsplit("# ", 1)[1].strip()
    assert capsys.readouterr().out.strip() == expected


def _embedding_model(sparse: bool):
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(20, 8, sparse=sparse), nn.Flatten(), nn.Linear(48, 3))


def test_sparse_embedding_gradients_are_measured_like_dense_ones():
    """nn.Embedding(sparse=True) has a sparse weight gradient: the Monitor and the init
    audit's statistics read its norm from the stored values (the dense twin's reference)."""
    from babysit.probes import activation_stats

    ids = torch.randint(0, 20, (16, 6), generator=torch.Generator().manual_seed(1))
    y = ids[:, 0] % 3
    norms = {}
    for sparse in (True, False):
        model = _embedding_model(sparse)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = _run(model, ids, y, optimizer, steps=2, every=1)
        first = mon.history[0]["layers"][0]
        stats = activation_stats(_embedding_model(sparse), ids, y)[0]
        norms[sparse] = (first["weight_grad_norm"], stats.weight_grad_norm)
        assert mon.history[1]["loop"]["stale_gradient"] == []
    assert norms[True] == pytest.approx(norms[False], rel=1e-5)


def test_short_run_gone_nan_names_the_first_non_finite_layer():
    from babysit.checks.lr import check_lr

    model, ids, y, _ = _setup()
    _lstm_to_inf(model)
    findings, measured = check_lr(
        model,
        ids,
        y,
        task_for(None),
        lr=0.1,
        suggestion=None,
        optimizer="sgd",
        steps=3,
        batch_size=8,
    )
    (found,) = findings
    assert (found.code, found.layer) == ("LR_TOO_HIGH", "rnn")
    assert "the first layer with a non-finite output was rnn" in found.message
    assert measured["run"]["nonfinite_layer"]["layer"] == "rnn"


class BreaksAtThirdStep(Tagger):
    """Its LSTM's weights go to inf on the third training forward pass: the step that
    breaks it then spreads NaN into every weight, the embedding first."""

    calls = 0

    def forward(self, ids):
        if self.training:
            self.calls += 1
            if self.calls == 3:
                _lstm_to_inf(self)
        return super().forward(ids)


def test_short_run_nan_is_located_with_the_weights_before_the_step_that_broke_them():
    from babysit.checks.lr import check_lr

    torch.manual_seed(0)
    ids = torch.randint(0, 20, (16, 6))
    findings, measured = check_lr(
        BreaksAtThirdStep(),
        ids,
        ids[:, 0] % 3,
        task_for(None),
        lr=0.1,
        suggestion=None,
        optimizer="sgd",
        steps=6,
        batch_size=16,
    )
    (found,) = findings
    assert measured["run"]["stop"].startswith("loss became nan")
    assert (found.code, found.layer) == ("LR_TOO_HIGH", "rnn")
