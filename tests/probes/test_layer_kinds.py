"""The probes on every layer kind: default layers, tuple outputs, attention as one layer,
LSTM/GRU gate saturation against a step-by-step reference, the first non-finite layer."""

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from babysit.nn.activations import SATURATION_DERIVATIVE_FRACTION
from babysit.probes import activation_stats, select_layers
from babysit.probes.nonfinite import first_nonfinite_layer
from babysit.probes.recurrent import gate_saturation
from babysit.probes.trace import trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

from kinds import Tagger  # noqa: E402


def _tagger(seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(0, 20, (16, 6))
    return Tagger(), ids, ids[:, 0] % 3


def test_default_layers_are_every_kind_but_what_attention_runs_itself():
    model, _, _ = _tagger()
    names = [n for n, _ in select_layers(model)]
    assert names == ["head", "embedding", "rnn", "norm", "attn", "rms", "proj"]


def test_activation_stats_of_an_lstm_are_those_of_its_output_sequence_in_forward_order():
    model, ids, labels = _tagger()
    stats = activation_stats(model, ids, labels)
    assert [s.name for s in stats] == ["embedding", "rnn", "norm", "attn", "rms", "proj", "head"]
    assert [s.depth for s in stats] == list(range(7))
    with torch.no_grad():
        sequence, _ = model.rnn(model.embedding(ids))
        h = model.norm(sequence)
        attended, _ = model.attn(h, h, h)
    by_name = {s.name: s for s in stats}
    assert by_name["rnn"].std == pytest.approx(float(sequence.std()), rel=1e-5)
    assert by_name["attn"].std == pytest.approx(float(attended.std()), rel=1e-5)
    assert by_name["rnn"].grad_std is not None and by_name["attn"].grad_std > 0
    weight_std = float(model.proj.weight.detach().std())
    assert by_name["proj"].weight_std == pytest.approx(weight_std, rel=1e-5)


def test_trace_records_attention_as_one_call_fed_by_the_norm():
    model, ids, _ = _tagger()
    calls = {c.name: c for c in trace(model, ids).calls}
    assert "attn.out_proj" not in calls
    assert calls["rnn"].output_shape == (16, 6, 8)
    assert calls["attn"].sources == [calls["norm"].index] * 3
    assert calls["proj"].is_weight and not calls["rnn"].is_weight


def _reference_gate_saturation(lstm: nn.LSTM, x: Tensor) -> float:
    """Step an LSTMCell with the LSTM's weights and count saturated gate values by hand."""
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(lstm, f"{name}_l0"))
        h = c = torch.zeros(x.shape[0], lstm.hidden_size)
        saturated, total = 0, 0
        for t in range(x.shape[1]):
            z = x[:, t] @ cell.weight_ih.t() + cell.bias_ih + h @ cell.weight_hh.t() + cell.bias_hh
            i, f, g, o = z.chunk(4, dim=1)
            for s in (torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)):
                saturated += int((s * (1 - s) < SATURATION_DERIVATIVE_FRACTION * 0.25).sum())
            tg = torch.tanh(g)
            saturated += int((1 - tg**2 < SATURATION_DERIVATIVE_FRACTION).sum())
            total += 4 * z.shape[0] * lstm.hidden_size
            h, c = cell(x[:, t], (h, c))
    return saturated / total


@pytest.mark.parametrize("std", [0.1, 2.0])
def test_lstm_gate_saturation_matches_a_step_by_step_reference(std):
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16, batch_first=True)
    for name, p in lstm.named_parameters():
        if "weight" in name:
            nn.init.normal_(p, std=std)
    x = torch.randn(4, 7, 8)
    found = float(gate_saturation(lstm, (x,), lstm(x)))
    assert found == pytest.approx(_reference_gate_saturation(lstm, x), abs=1e-3)
    assert (found > 0.3) == (std > 1)


def test_gru_gate_saturation_is_read_without_batch_first_too():
    torch.manual_seed(0)
    gru = nn.GRU(8, 16)  # (T, B, features)
    x = torch.randn(7, 4, 8)
    low = float(gate_saturation(gru, (x,), gru(x)))
    for name, p in gru.named_parameters():
        if "weight" in name:
            nn.init.normal_(p, std=2.0)
    assert low < 0.05 < 0.3 < float(gate_saturation(gru, (x,), gru(x)))


def test_first_nonfinite_layer_is_an_lstm_set_to_inf():
    model, ids, _ = _tagger()
    with torch.no_grad():
        model.rnn.weight_hh_l0[0, 0] = float("inf")
    found = first_nonfinite_layer(model, ids)
    assert found == {"layer": "rnn", "kind": "LSTM", "nonfinite_parameters": ["rnn.weight_hh_l0"]}


def test_first_nonfinite_layer_is_the_attention_fed_a_nan_mask():
    model, ids, _ = _tagger()
    assert first_nonfinite_layer(model, ids) is None
    model.mask = torch.zeros(6, 6)
    model.mask[2, 3] = float("nan")
    found = first_nonfinite_layer(model, ids)
    assert found["layer"] == "attn" and found["nonfinite_parameters"] == []
