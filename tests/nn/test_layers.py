"""The layer-kind table (babysit.nn.layers) and what apply_init does with each kind."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers.pytorch_utils import Conv1D

from babysit.nn import apply_init
from babysit.nn.layers import (
    is_weight_layer,
    layer_kind,
    layer_output,
    layer_weights,
    parameterised_layers,
    weight_matrix,
)


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.Linear(3, 4), "linear"),
        (nn.Conv2d(3, 4, 3), "conv"),
        (Conv1D(4, 3), "conv1d_transposed"),
        (nn.Embedding(10, 4), "embedding"),
        (nn.LSTM(4, 4), "recurrent"),
        (nn.GRU(4, 4), "recurrent"),
        (nn.RNN(4, 4), "recurrent"),
        (nn.LSTMCell(4, 4), "recurrent"),
        (nn.MultiheadAttention(4, 2), "attention"),
        (nn.LayerNorm(4), "normalization"),
        (nn.RMSNorm(4), "normalization"),
        (nn.BatchNorm1d(4), "normalization"),
        (nn.LayerNorm(4, elementwise_affine=False), None),
        (nn.ReLU(), None),
        (nn.Dropout(), None),
    ],
)
def test_layer_kind_of_each_module(module, kind):
    assert layer_kind(module) == kind


def test_conv1d_is_a_weight_layer_with_its_weight_read_out_by_in():
    layer = Conv1D(5, 3)  # nf=5 outputs, nx=3 inputs: weight stored (3, 5)
    assert is_weight_layer(layer) and not is_weight_layer(nn.Embedding(3, 3))
    x = torch.randn(2, 3)
    w = weight_matrix(layer)
    assert w.shape == (5, 3)
    torch.testing.assert_close(layer(x), x @ w.t() + layer.bias)


def test_layer_output_is_the_sequence_of_an_rnn_and_the_values_of_attention():
    lstm, attention = nn.LSTM(4, 6, batch_first=True), nn.MultiheadAttention(4, 2)
    x = torch.randn(2, 5, 4)
    sequence, _ = lstm(x)
    assert layer_output(lstm(x)).shape == sequence.shape == (2, 5, 6)
    q = torch.randn(5, 2, 4)
    out, weights = attention(q, q, q)
    assert layer_output((out, weights)) is out
    packed = pack_padded_sequence(x, [5, 3], batch_first=True)
    assert layer_output(lstm(packed)).shape == (8, 6)  # the packed data, 5 + 3 steps
    assert layer_output({"a": x}) is None


def test_parameterised_layers_leave_out_what_attention_runs_itself():
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(4, 2), "fc": nn.Linear(4, 2)})
    assert [n for n, _ in parameterised_layers(model)] == ["attn", "fc"]
    names = [n for n, _ in layer_weights(model["attn"])]
    assert names == ["in_proj_weight", "out_proj.weight"]
    lstm = nn.LSTM(3, 3, num_layers=2, bidirectional=True)
    assert len(layer_weights(lstm)) == 8  # ih and hh, 2 layers x 2 directions; no biases
    assert [n for n, _ in layer_weights(nn.LayerNorm(3))] == ["weight", "bias"]


def test_apply_init_sets_conv1d_by_its_fan_in():
    torch.manual_seed(0)
    layer = Conv1D(400, 100)  # weight (in=100, out=400)
    apply_init(nn.Sequential(layer, nn.ReLU(), nn.Linear(400, 2)), "he")
    # He before a ReLU: std = sqrt(2 / fan_in), fan_in = 100 (not 400)
    assert float(layer.weight.detach().std()) == pytest.approx(math.sqrt(2 / 100), rel=0.05)
    assert float(layer.bias.detach().abs().max()) == 0


def test_apply_init_sets_attention_projections_and_keeps_embedding_rnn_and_norm_init():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "embedding": nn.Embedding(50, 64),
            "rnn": nn.LSTM(64, 64),
            "norm": nn.LayerNorm(64),
            "attn": nn.MultiheadAttention(64, 4),
        }
    )
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if "attn" not in n}
    apply_init(model, "small")
    for name, p in model.named_parameters():
        if name in kept:
            assert torch.equal(p, kept[name]), name
    assert float(model["attn"].in_proj_weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(model["attn"].out_proj.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(model["attn"].in_proj_bias.detach().abs().max()) == 0


def test_apply_init_torch_resets_every_kind_to_pytorch_defaults():
    torch.manual_seed(0)
    embedding, norm = nn.Embedding(200, 64), nn.LayerNorm(64)
    nn.init.constant_(embedding.weight, 3.0)
    nn.init.constant_(norm.weight, 3.0)
    apply_init(nn.Sequential(embedding, norm), "torch")
    assert float(embedding.weight.detach().std()) == pytest.approx(1.0, rel=0.05)  # N(0, 1)
    assert torch.equal(norm.weight, torch.ones(64))
