"""A zoo of small real models, each with learnable synthetic data, healthy and with one
planted bug (issue 12): the hand-written CIFAR ResNet-18 of tests/zoo/resnet.py, GPT-2 and
BERT built from transformers configs (random init, nothing downloaded), a hand-written causal
transformer LM, LSTM/GRU classifiers and LMs, a segmentation net, and MSE regression.

Every builder is seeded and returns a `Case`: the model, the data as a user would pass it,
the checkup keywords (loss_fn, lr) and the code the planted bug should get. Used by
tests/checks/test_real_models.py and bench/doctor_time.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from babysit.doctor import Budget

# Checkup budgets for the zoo's tests. AUDIT: enough to reach the audits and the initial loss;
# the training checks barely run. FIT: enough for a small healthy model to overfit 20
# examples and learn its labels.
AUDIT = Budget(
    audit_examples=32,
    max_examples=64,
    overfit_steps=2,
    reg_steps=1,
    learnable_steps=1,
    range_steps=4,
    lr_steps=4,
    batch_size=16,
)
FIT = Budget(
    audit_examples=64,
    max_examples=512,
    overfit_steps=150,
    reg_steps=10,
    learnable_steps=100,
    range_steps=20,
    lr_steps=20,
    batch_size=32,
)

VOCAB = 100
SEQ_LEN = 32


@dataclass
class Case:
    """A model, its data and how to check it; `bug` is the planted bug's expected code (None
    for a healthy model)."""

    model: nn.Module
    data: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    bug: str | None = None
    about: str = ""


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- data ---------------------------------------------------------------------------------


def images(n: int = 256, shape=(3, 16, 16), classes: int = 10, seed: int = 0):
    """Class-conditional Gaussian images, standardized (unit scale, zero mean): a class
    mean pattern plus N(0, 1) noise, learnable by a CNN."""
    g = _generator(seed)
    means = torch.randn(classes, *shape, generator=g) * 0.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = means[y] + torch.randn(n, *shape, generator=g)
    x = (x - x.mean()) / x.std()
    return x, y


def textures(
    n: int = 256,
    shape=(3, 16, 16),
    classes: int = 10,
    seed: int = 0,
    motif: int = 2,
    colour: float = 0.3,
    noise: float = 0.5,
):
    """Class-dependent colour and texture anywhere in the image, standardized: each class
    has a colour (a per-channel offset) and a `motif` x `motif` pattern tiled over the image
    at a random shift per image, plus Gaussian `noise`: what a CNN reads (local features
    pooled over the image), and a linear classifier only as a mixture of shifted templates.
    Measured (192 fitted, 64 held out, 3x16x16): a width-4 ResNet-18 scores 73% held-out
    after 100 Adam steps (1e-3, batches of 32), a ridge classifier 56%. `images` (a fixed
    pattern per pixel) is the opposite: the ridge classifier scores 100% on it, the
    width-4 ResNet memorises it and scores 31% held-out after 400 steps."""
    g = _generator(seed)
    channels, height, width = shape
    colours = torch.randn(classes, channels, 1, 1, generator=g) * colour
    motifs = torch.randn(classes, channels, motif, motif, generator=g)
    tiles = (math.ceil(height / motif) + 1, math.ceil(width / motif) + 1)
    tiled = motifs.repeat(1, 1, *tiles)  # (classes, C, >= H + motif, >= W + motif)
    y = torch.randint(0, classes, (n,), generator=g)
    dy, dx = (torch.randint(0, motif, (n,), generator=g) for _ in range(2))
    x = torch.stack(
        [tiled[c, :, i : i + height, j : j + width] for c, i, j in zip(y, dy, dx, strict=True)]
    )
    x = x + colours[y] + noise * torch.randn(n, *shape, generator=g)
    x = (x - x.mean()) / x.std()
    return x, y


def token_sequences(
    n: int = 256, length: int = SEQ_LEN, vocab: int = VOCAB, seed: int = 0, starts: int = 8
):
    """Next-token data: each sequence starts at one of `starts` tokens and steps by 1 or 2
    (mod V), so the first step is ambiguous and the rest is determined: (ids, next ids), both
    (N, T) int64. Sequences share their first token, so exact token accuracy is out of reach
    on the first position: a correct causal LM cannot reach 100%."""
    g = _generator(seed)
    start = torch.randint(0, starts, (n, 1), generator=g) * (vocab // starts)
    step = torch.randint(1, 3, (n, 1), generator=g)
    positions = torch.arange(length + 1)[None, :]
    seq = (start + step * positions) % vocab
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


LABEL_VOCAB = 12  # token_labels' ids: few enough that 384 examples show each one ~30 times
LABEL_LENGTH = 8


def token_labels(
    n: int = 512, length: int = LABEL_LENGTH, vocab: int = LABEL_VOCAB, classes: int = 3, seed=0
):
    """Sequence classification: random ids, label = first id mod `classes` (the issue's
    `x[:, 0] % 3`), chance 1/classes. Measured: Embedding -> LSTM(32), Adam 1e-2, batches of
    32, 5 epochs on 384 examples: 91% held-out (vocab 12, T=8)."""
    g = _generator(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    return ids, ids[:, 0] % classes


def squares(n: int = 64, size: int = 16, classes: int = 3, seed: int = 0):
    """Segmentation: images with a bright square of a class-dependent colour channel on
    noise; the mask holds the square's class (1..classes-1) and background 0."""
    g = _generator(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    mask = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        c = int(torch.randint(1, classes, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(0, size - 6, (2,), generator=g))
        side = int(torch.randint(3, 7, (1,), generator=g))
        x[i, c % 3, top : top + side, left : left + side] += 2.0
        mask[i, top : top + side, left : left + side] = c
    return x, mask


def regression(n: int = 512, features: int = 8, seed: int = 0):
    """y = x w + noise, unit-scale inputs and targets, targets shaped (N, 1)."""
    g = _generator(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, 1, generator=g) / math.sqrt(features)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return x, (y - y.mean()) / y.std()


# --- models -------------------------------------------------------------------------------


class Softmaxed(nn.Module):
    """`model` followed by a softmax over the classes: the planted output-activation bug."""

    def __init__(self, model: nn.Module, dim: int = 1):
        super().__init__()
        self.model, self.softmax = model, nn.Softmax(dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.softmax(self.model(x))


def resnet18(classes: int = 10, width: int = 64, softmax: bool = False) -> nn.Module:
    """The CIFAR ResNet-18 of tests/zoo/resnet.py (issue 10's), optionally softmaxed."""
    from tests.zoo.resnet import ResNet18

    model = ResNet18(classes, width)
    return Softmaxed(model) if softmax else model


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention (nanoGPT's), written out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention and a 4x GELU MLP, each residual."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    """A hand-written causal transformer LM returning (B, T, V) logits (or (B, V, T) with
    `classes_first`, torch's layout). Embeddings N(0, 0.02) as in GPT-2; `embedding_std`
    plants an init bug; `softmax=True` squashes the logits."""

    def __init__(
        self,
        vocab=VOCAB,
        width=32,
        heads=2,
        layers=2,
        length=SEQ_LEN,
        classes_first=False,
        embedding_std=0.02,
        softmax=False,
    ):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(length, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.classes_first, self.softmax = classes_first, softmax
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.tok.weight, std=embedding_std)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        logits = self.head(self.ln(self.blocks(self.tok(ids) + self.pos(positions))))
        if self.softmax:
            logits = logits.softmax(dim=-1)
        return logits.transpose(1, 2) if self.classes_first else logits


class SplitAttention(nn.Module):
    """Self-attention with separate query/key/value projections (BERT's layout) and an
    output projection; `fused` uses scaled_dot_product_attention, else an explicit softmax;
    `detach_query` plants a bug: the query cut out of the graph."""

    def __init__(self, width=16, fused=False, detach_query=False):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.fused, self.detach_query = fused, detach_query

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.detach_query:
            q = q.detach()
        if self.fused:
            mixed = F.scaled_dot_product_attention(q, k, v)
        else:
            mixed = (q @ k.transpose(1, 2) / math.sqrt(x.shape[-1])).softmax(-1) @ v
        return self.out(mixed)


class TokenEncoder(nn.Module):
    """BERT in small, written out: token and position embeddings summed under a LayerNorm,
    one Post-LN attention block, a head on the first position; with `std`, every weight
    N(0, std) and every bias 0 (BERT's init at std 0.02). `detach_attention` plants a bug:
    the attention's output detached from the residual sum; `embedding_std` re-initialises
    the token table."""

    def __init__(
        self,
        vocab=20,
        width=16,
        length=8,
        classes=3,
        std=None,
        embedding_std=None,
        detach_attention=False,
        **attention,
    ):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(length, width)
        self.ln = nn.LayerNorm(width)
        self.attention = SplitAttention(width, **attention)
        self.ln_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)
        self.detach_attention = detach_attention
        if std is not None:
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Embedding):
                    nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)
        if embedding_std is not None:
            nn.init.normal_(self.tok.weight, std=embedding_std)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))
        mixed = self.attention(h)
        h = self.ln_out(h + (mixed.detach() if self.detach_attention else mixed))
        return self.head(h[:, 0])


class RecurrentClassifier(nn.Module):
    """Embedding -> LSTM (or GRU) -> Linear on the last state. `detach=True` plants the bug:
    the recurrent output is detached, so only the head trains."""

    def __init__(self, vocab=VOCAB, width=32, classes=3, cell="lstm", detach=False):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(width, width, batch_first=True)
        self.fc = nn.Linear(width, classes)
        self.detach = detach

    def forward(self, ids: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(ids))
        last = out[:, -1]
        return self.fc(last.detach() if self.detach else last)


class TwoInputs(nn.Module):
    """`model(ids, features)`: an embedding of a category id plus a projection of real
    features, then an MLP head (a tuple-input model, as tabular nets with categorical and
    numeric columns are)."""

    def __init__(self, categories=LABEL_VOCAB, features=8, width=32, classes=3):
        super().__init__()
        self.embedding = nn.Embedding(categories, width)
        self.project = nn.Linear(features, width)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, classes))

    def forward(self, ids: Tensor, features: Tensor) -> Tensor:
        return self.head(self.embedding(ids) + self.project(features))


class RecurrentLM(nn.Module):
    """Embedding -> GRU (or LSTM) -> Linear per position, (B, V, T) logits (torch's layout)."""

    def __init__(self, vocab=VOCAB, width=32, cell="gru"):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(ids))
        return self.head(out).transpose(1, 2)


class SegNet(nn.Module):
    """A small encoder-decoder: two conv stages down, a transposed conv back up, a 1x1 head:
    (B, C, H, W) class scores. `softmax=True` plants the bug."""

    def __init__(self, classes: int = 3, width: int = 16, softmax: bool = False):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 2, stride=2), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.head = nn.Conv2d(width, classes, 1)
        self.softmax = nn.Softmax(dim=1) if softmax else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.softmax(self.head(self.decoder(self.encoder(x))))


def regression_mlp(features: int = 8, width: int = 64, outputs: int = 1) -> nn.Module:
    model = nn.Sequential(
        nn.Linear(features, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, outputs),
    )
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def gpt2(n_layer=2, n_embd=64, n_head=2, vocab=VOCAB, n_positions=SEQ_LEN, embedding_std=None):
    """transformers' GPT2LMHeadModel from a config, random init, nothing downloaded.
    `embedding_std` re-initialises the (tied) token embedding: the planted init bug."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=n_positions
    )
    model = GPT2LMHeadModel(config)
    if embedding_std is not None:
        nn.init.normal_(model.transformer.wte.weight, std=embedding_std)
    return model


def bert(num_labels: int = 3, vocab: int = VOCAB, length: int = 16):
    """transformers' BertForSequenceClassification from a tiny config (2 layers, 32 wide),
    random init, nothing downloaded; dropout off so that short fits are deterministic."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=length,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


class BertItems(torch.utils.data.Dataset):
    """Hugging Face style items: ({"input_ids", "attention_mask"}, label)."""

    def __init__(self, ids: Tensor, labels: Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, self.labels[i]


class Logits(nn.Module):
    """Wraps a transformers model so it returns its `logits` tensor, optionally in torch's
    (B, V, T) layout: what a user writes today to get past the checkup."""

    def __init__(self, model: nn.Module, classes_first: bool = False):
        super().__init__()
        self.model, self.classes_first = model, classes_first

    def forward(self, ids: Tensor) -> Tensor:
        logits = self.model(ids).logits
        return logits.transpose(1, 2) if self.classes_first and logits.dim() == 3 else logits


# --- the cases ----------------------------------------------------------------------------


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def resnet_case(bug: bool = False, seed: int = 0, n: int = 256, width: int = 4):
    """The CIFAR ResNet-18 at width 4 on 3x16x16 textures (a task for a CNN: `textures`);
    the bug: softmax before the loss."""
    _seeded(seed)
    x, y = textures(n, (3, 16, 16), 10, seed)
    model = resnet18(10, width, softmax=bug)
    return Case(model, (x, y), {}, "OUTPUT_ACTIVATION" if bug else None, "CIFAR ResNet")


def gpt2_case(bug: bool = False, seed: int = 0, n: int = 128, wrapped: bool = False):
    """transformers' GPT-2 (2 layers, 64 wide, vocab 100, T=32) on next-token data; the bug is
    a token embedding of std 1.0 instead of 0.02 (tied to the output layer, it inflates the
    logits: INIT_LOSS_MISMATCH)."""
    _seeded(seed)
    ids, targets = token_sequences(n, SEQ_LEN, VOCAB, seed)
    model = gpt2(embedding_std=1.0 if bug else None)
    if wrapped:
        model = Logits(model, classes_first=True)
    return Case(model, (ids, targets), {}, "INIT_LOSS_MISMATCH" if bug else None, "GPT-2")


def bert_case(bug: bool = False, seed: int = 0, n: int = 256, items: bool = True):
    """transformers' BERT for sequence classification (3 labels) on `token_labels`, as
    (dict, label) items; the bug: 2 labels configured for 3 classes (LABELS_INVALID)."""
    _seeded(seed)
    ids, labels = token_labels(n, seed=seed)
    model = bert(num_labels=2 if bug else 3)
    data = BertItems(ids, labels) if items else (ids, labels)
    return Case(model, data, {}, "LABELS_INVALID" if bug else None, "BERT")


def transformer_lm_case(
    bug: bool = False, seed: int = 0, n: int = 128, classes_first=False, length=SEQ_LEN, width=32
):
    """The hand-written causal transformer LM on next-token data; the bug: softmax on the
    logits before cross-entropy (OUTPUT_ACTIVATION)."""
    _seeded(seed)
    ids, targets = token_sequences(n, length, VOCAB, seed)
    model = TransformerLM(
        width=width, length=length, classes_first=classes_first, softmax=bug, layers=1
    )
    return Case(model, (ids, targets), {}, "OUTPUT_ACTIVATION" if bug else None, "causal LM")


def lstm_case(
    bug: bool = False, seed: int = 0, n: int = 512, cell: str = "lstm", lr=None, width=32
):
    """Embedding -> LSTM classifier on `x[:, 0] % 3`; the bug: the LSTM output detached
    (PARAMS_NOT_UPDATED), checked with `lr` given (Adam 1e-2), as in the issue's row."""
    _seeded(seed)
    ids, labels = token_labels(n, seed=seed)
    model = RecurrentClassifier(vocab=LABEL_VOCAB, width=width, cell=cell, detach=bug)
    lr = lr if lr is not None else (1e-2 if bug else None)
    kwargs = {"lr": lr, "optimizer": "adam"} if lr else {}
    return Case(model, (ids, labels), kwargs, "PARAMS_NOT_UPDATED" if bug else None, cell)


def gru_lm_case(bug: bool = False, seed: int = 0, n: int = 128, length: int = 16):
    """Embedding -> GRU LM on next-token data, (B, V, T) logits; the bug: lr 10 with SGD. The
    saturating GRU keeps the loss from exploding, so the code is UPDATE_RATIO_HIGH."""
    _seeded(seed)
    ids, targets = token_sequences(n, length, VOCAB, seed)
    kwargs = {"lr": 10.0} if bug else {}
    code = "UPDATE_RATIO_HIGH" if bug else None
    return Case(RecurrentLM(), (ids, targets), kwargs, code, "GRU LM")


def two_inputs_case(bug: bool = False, seed: int = 0, n: int = 512, layout: str = "pair"):
    """`TwoInputs` on (ids, features) with label = (id + [feature 0 > 0]) mod 3, passed as an
    `((ids, features), labels)` pair, a TensorDataset of three tensors or a DataLoader over
    it (`layout`); the bug: the labels shuffled apart from the inputs (LABELS_UNLEARNABLE)."""
    _seeded(seed)
    g = _generator(seed)
    ids = torch.randint(0, LABEL_VOCAB, (n,), generator=g)
    features = torch.randn(n, 8, generator=g)
    labels = (ids + (features[:, 0] > 0).long()) % 3
    if bug:
        labels = labels[torch.randperm(n, generator=g)]
    data: Any = ((ids, features), labels)
    if layout != "pair":
        data = torch.utils.data.TensorDataset(ids, features, labels)
    if layout == "loader":
        data = torch.utils.data.DataLoader(data, batch_size=64)
    code = "LABELS_UNLEARNABLE" if bug else None
    return Case(TwoInputs(), data, {}, code, "two inputs")


def segmentation_case(bug: bool = False, seed: int = 0, n: int = 64):
    """SegNet on `squares`; the bug: softmax over the classes before cross-entropy."""
    _seeded(seed)
    x, mask = squares(n, 16, 3, seed)
    model = SegNet(3, softmax=bug)
    return Case(model, (x, mask), {}, "OUTPUT_ACTIVATION" if bug else None, "segmentation")


def regression_case(bug: str | None = None, seed: int = 0, n: int = 512):
    """An MSE regression MLP; bugs: "scale" (targets x1000, TARGETS_NOT_SCALED), "broadcast"
    ((N,) targets against (N, 1) outputs, SHAPE_BROADCAST)."""
    _seeded(seed)
    x, y = regression(n, 8, seed)
    code = None
    if bug == "scale":
        y, code = y * 1000, "TARGETS_NOT_SCALED"
    elif bug == "broadcast":
        y, code = y[:, 0], "SHAPE_BROADCAST"
    return Case(regression_mlp(), (x, y), {"loss_fn": nn.MSELoss()}, code, "MSE regression")


# --- factories for `babysit doctor --model tests/zoo/zoo.py:FUNCTION` ----------------------


def cli_gru_lm(vocab_size: int):
    """A GRU LM for the CLI, sized by the vocabulary the CLI passes as `vocab_size`."""
    torch.manual_seed(0)
    return _IntegerInputs(RecurrentLM(vocab=vocab_size))


class _IntegerInputs(nn.Module):
    """Refuses float inputs, so a CLI test sees token ids reach the model as integers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise TypeError(f"token ids arrived as {ids.dtype}")
        return self.model(ids)
