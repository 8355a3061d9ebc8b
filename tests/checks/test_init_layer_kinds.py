"""The init audit on the layer kinds of babysit.nn.layers: the culprit layer is named (an
LSTM saturated by a large init, a pure attention stack whose signal collapses, an LSTM that
overflows), and the zoo's healthy models (tests/zoo) get no init finding."""

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from babysit.checks.init_audit import audit_init
from babysit.nn import apply_init
from babysit.probes import activation_stats
from babysit.probes.trace import trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import zoo  # noqa: E402


@pytest.fixture(autouse=True)
def quiet_transformers():
    from transformers.utils import logging

    logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _audit(model, x, y, loss_fn=None):
    stats = activation_stats(model, x, y, loss_fn=loss_fn)
    return audit_init(stats, trace(model, x))


def _scale_recurrent(model: nn.Module, std: float) -> nn.Module:
    for name, p in model.named_parameters():
        if name.startswith("rnn.weight"):
            nn.init.normal_(p, std=std)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_large_init_recurrent_layer_is_saturated_and_named(cell):
    case = zoo.lstm_case(cell=cell)
    x, y = case.data
    healthy, _ = _audit(case.model, x[:64], y[:64])
    assert healthy == []
    findings, _ = _audit(_scale_recurrent(case.model, 1.0), x[:64], y[:64])
    (found,) = findings
    assert (found.code, found.layer) == ("INIT_SATURATED", "rnn")
    assert "recurrent" in found.message and "reset_parameters" in found.fix


def test_lstm_set_to_inf_overflows_at_the_lstm():
    case = zoo.lstm_case()
    with torch.no_grad():
        case.model.rnn.weight_hh_l0.fill_(float("inf"))
    x, y = case.data
    findings, _ = _audit(case.model, x[:32], y[:32])
    assert [(f.code, f.severity, f.layer) for f in findings] == [("INIT_EXPLODING", "error", "rnn")]


class AttentionStack(nn.Module):
    """Self-attention blocks with no residual and no normalization: the signal collapses
    with depth (averaging over positions shrinks it; Dong et al. 2021, "pure attention loses
    rank doubly exponentially with depth")."""

    def __init__(self, width=32, depth=4, classes=3):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.MultiheadAttention(width, 4, batch_first=True) for _ in range(depth)
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        for attention in self.blocks:
            x, _ = attention(x, x, x)
        return self.head(x.mean(dim=1))


def test_collapse_through_a_pure_attention_stack_starts_at_an_attention_layer():
    torch.manual_seed(0)
    model = AttentionStack()
    apply_init(model, "small")  # in_proj and out_proj at N(0, 0.01^2)
    x, y = torch.randn(16, 8, 32), torch.randint(0, 3, (16,))
    findings, measured = _audit(model, x, y)
    assert measured["depth_layers"] == [f"blocks.{i}" for i in range(4)]
    (found,) = [f for f in findings if f.code == "INIT_VANISHING"]
    assert found.layer == "blocks.1"  # the first hop that shrinks it
    assert measured["forward_change"] < 1e-3


def test_transformer_encoder_layers_get_no_init_finding():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 3, enable_nested_tensor=False))
    model.append(nn.Flatten()).append(nn.Linear(8 * 32, 3))
    x, y = torch.randn(16, 8, 32), torch.randint(0, 3, (16,))
    findings, _ = _audit(model, x, y)
    assert findings == []
    names = {s.name for s in activation_stats(model, x, y)}
    assert {"0.layers.0.self_attn", "0.layers.2.norm2", "0.layers.1.linear1"} <= names


class _Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).logits


HEALTHY = {
    "gpt2": lambda: zoo.gpt2_case(n=32, wrapped=True),
    "gpt2-embedding-std-1": lambda: zoo.gpt2_case(bug=True, n=32, wrapped=True),
    "bert": lambda: zoo.bert_case(n=32, items=False),
    "causal_lm": lambda: zoo.transformer_lm_case(n=32, classes_first=True),
    "lstm": lambda: zoo.lstm_case(n=64),
    "gru": lambda: zoo.lstm_case(n=64, cell="gru"),
    "gru_lm": lambda: zoo.gru_lm_case(n=32),
}


@pytest.mark.parametrize("name", list(HEALTHY))
def test_zoo_transformers_and_recurrent_models_get_no_init_finding(name):
    """GPT-2's std-1 embedding is an initial-loss bug (INIT_LOSS_MISMATCH, through the tied
    output layer), not an init-audit one: the audit must not blame a layer for it."""
    case = HEALTHY[name]()
    model = _Logits(case.model) if name == "bert" else case.model
    x, y = case.data
    findings, _ = _audit(model, x[:32], y[:32])
    assert findings == [], [f.message for f in findings]


class OwnRMSNorm(nn.Module):
    """A model's own RMSNorm class (as transformers' LlamaRMSNorm): not torch's."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def test_a_models_own_rmsnorm_counts_as_normalization():
    from babysit.checks.architecture_audit import audit_architecture
    from babysit.checks.task import task_for

    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [nn.Linear(16, 16), OwnRMSNorm(16), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(16, 3))
    x = torch.randn(8, 16)
    codes = {f.code for f in audit_architecture(trace(model, x), task_for(None), model(x))}
    assert "NO_NORMALIZATION" not in codes


def test_checkup_architecture_reads_the_layer_kinds():
    import babysit as bs

    torch.manual_seed(0)
    model = AttentionStack(width=16, depth=2)
    x, y = torch.randn(64, 8, 16), torch.randint(0, 3, (64,))
    report = bs.checkup(model, (x, y), budget=zoo.AUDIT)
    kinds = report.measurements["architecture"]["layer_kinds"]
    assert kinds == {"attention": 2, "linear": 1}
    assert {s["name"] for s in report.measurements["layers"]} >= {"blocks.0", "blocks.1"}
