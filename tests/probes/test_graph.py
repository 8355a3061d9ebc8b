"""babysit.probes.graph: the attention projections and the normalized layers, read from the
autograd graph of one forward pass, on models written out here and on transformers'."""

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from babysit.probes.graph import graph_roles
from babysit.train.measuring import UpdateRatioLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import zoo  # noqa: E402


def _ids(n=4, length=8, vocab=20):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fused", [False, True], ids=["softmax", "sdpa"])
def test_separate_query_key_value_are_one_attention(fused):
    torch.manual_seed(0)
    roles = graph_roles(zoo.TokenEncoder(fused=fused), _ids())
    assert roles.attention == {
        "attention": ["attention.query", "attention.key", "attention.value"]
    }


def test_embeddings_summed_under_a_layernorm_and_a_post_ln_projection_are_normalized():
    torch.manual_seed(0)
    roles = graph_roles(zoo.TokenEncoder(), _ids())
    assert roles.normalized == {"tok", "pos", "attention.out", "ln"}
    assert "head" not in roles.normalized


def test_a_detached_query_leaves_one_projection_behind_the_softmax_so_no_group():
    torch.manual_seed(0)
    assert graph_roles(zoo.TokenEncoder(detach_query=True), _ids()).attention == {}


def test_a_softmax_over_one_layer_is_not_an_attention():
    """A classifier's softmax, a fused qkv projection, torch's MultiheadAttention (one
    layer already): nothing to group."""
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    assert graph_roles(zoo.Softmaxed(nn.Sequential(nn.Linear(8, 3))), x).attention == {}
    ids = _ids(vocab=zoo.VOCAB)
    assert graph_roles(zoo.TransformerLM(length=8), ids).attention == {}
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.mha = nn.Linear(8, 8), mha

        def forward(self, x):
            h = self.inp(x)
            return self.mha(h, h, h)[0]

    assert graph_roles(Wrapped(), torch.randn(2, 5, 8)).attention == {}


def test_the_group_is_the_query_key_and_value_not_their_siblings():
    """q, k, v and an MLP as siblings in one block: the attention is q, k, v, named after
    the block; a softmax over the sum of two heads (no product) is no attention."""

    class Block(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
            self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

        def forward(self, x):
            weights = (self.q(x) @ self.k(x).transpose(1, 2)).softmax(-1)
            h = x + weights @ self.v(x)
            return h + self.fc2(self.fc1(h).relu())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.head1, self.head2 = nn.Linear(8, 3), nn.Linear(8, 3)

        def forward(self, x):
            h = self.block(x)[:, 0]
            return (self.head1(h) + self.head2(h)).softmax(-1)

    torch.manual_seed(0)
    roles = graph_roles(Net(), torch.randn(2, 5, 8))
    assert roles.attention == {"block": ["block.q", "block.k", "block.v"]}


def test_a_gated_product_or_an_activation_is_not_normalized():
    """LN(a(x) * sigmoid(b(x))) and LN(relu(c(x))) change the scale on the way: not
    normalized; LN(d(x)) and LN(0.5 * e(x)) are."""

    class Gates(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d, self.e = (nn.Linear(8, 8) for _ in range(5))
            self.ln = nn.LayerNorm(8)

        def forward(self, x):
            gated = self.ln(self.a(x) * torch.sigmoid(self.b(x)))
            return gated + self.ln(self.c(x).relu()) + self.ln(self.d(x)) + self.ln(0.5 * self.e(x))

    torch.manual_seed(0)
    assert graph_roles(Gates(), torch.randn(4, 8)).normalized == {"d", "e"}


def test_roles_leave_the_model_as_found():
    torch.manual_seed(0)
    model = zoo.TokenEncoder().eval()
    before = [p.detach().clone() for p in model.parameters()]
    graph_roles(model, _ids())
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bert_from_a_config_has_its_attentions_and_normalized_embeddings():
    from transformers.utils import logging

    logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = zoo.bert_case(n=8)
        ids = case.data.ids
        roles = graph_roles(
            case.model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        )
    for i in range(2):
        name = f"bert.encoder.layer.{i}.attention.self"
        assert roles.attention[name] == [f"{name}.query", f"{name}.key", f"{name}.value"]
    assert {
        "bert.embeddings.word_embeddings",
        "bert.embeddings.position_embeddings",
        "bert.embeddings.token_type_embeddings",
    } <= roles.normalized
    assert "classifier" not in roles.normalized


def test_distilbert_and_gpt2_from_configs():
    """DistilBERT's q_lin/k_lin/v_lin through scaled_dot_product_attention's math path (a
    softmax between two products) are one attention per layer; GPT-2's fused c_attn is one
    layer already."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=20, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=16
    )
    roles = graph_roles(DistilBertForSequenceClassification(config), {"input_ids": _ids()})
    name = "distilbert.transformer.layer.{}.attention"
    assert roles.attention == {
        name.format(i): [name.format(i) + f".{p}_lin" for p in "qkv"] for i in range(2)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert graph_roles(zoo.gpt2(n_positions=8), _ids(vocab=zoo.VOCAB)).attention == {}


def test_a_group_is_one_ratio_over_its_layers_together():
    """UpdateRatioLog with a group: ||[dq, dk, dv]|| / ||[q, k, v]||, computed here
    by hand from the weights before and after one SGD step."""
    torch.manual_seed(0)
    model = zoo.TokenEncoder()
    names = ["attention.query", "attention.key", "attention.value"]
    log = UpdateRatioLog(model, {"attention": names})
    assert "attention" in dict(log.layers) and "attention.query" not in dict(log.layers)
    weights = [model.get_submodule(n).weight for n in names]
    before = [w.detach().clone() for w in weights]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    log.on_batch_begin(None)
    F.cross_entropy(model(_ids()), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    log.on_batch_end(None, torch.tensor(0.0))
    pairs = zip(weights, before, strict=True)
    change = math.sqrt(sum(float((w.detach() - b).square().sum()) for w, b in pairs))
    norm = math.sqrt(sum(float(b.square().sum()) for b in before))
    assert log.medians()["attention"] == pytest.approx(change / norm, rel=1e-5)


def test_below_default_scale_is_the_norm_against_torchs_default_init():
    """A Linear as torch initialises it is at its scale (1); one scaled by 0.1 is at ~0.1 of
    it: ||W|| / sqrt(out / 3), the norm of U(-1/sqrt(fan_in), 1/sqrt(fan_in)) entries."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.Embedding(5, 4))
    with torch.no_grad():
        model[2].weight.mul_(0.1)
    scales = UpdateRatioLog(model).below_default_scale()
    assert scales["0"] == pytest.approx(1.0, abs=0.03)
    expected = float(model[2].weight.detach().norm()) / math.sqrt(64 / 3)
    assert scales["2"] == pytest.approx(expected, rel=1e-5) and scales["2"] < 0.12
    assert scales["3"] == 1.0


def test_roles_leave_the_random_generator_as_found():
    """Dropout in the forward pass draws random numbers: the checks after it must see the
    same stream as without it."""

    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.drop, self.ln = nn.Linear(8, 8), nn.Dropout(0.5), nn.LayerNorm(8)

        def forward(self, x):
            return self.ln(self.drop(self.fc(x)))

    torch.manual_seed(0)
    model, x = Dropped(), torch.randn(4, 8)
    state = torch.get_rng_state()
    assert graph_roles(model, x).normalized == {"fc"}
    assert torch.equal(torch.get_rng_state(), state)
