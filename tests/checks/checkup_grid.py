"""The calibration grid: healthy set-ups (no warning allowed) and planted faults (the expected
code must appear), across MLPs and CNNs, activations, inits, losses and optimizers.

The thresholds in babysit/checks were chosen with a margin between the two groups;
`python tests/checks/checkup_grid.py` prints the measurements behind them (docs/checkup.md
quotes them). tests/checks/test_calibration.py runs every case.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from babysit.data import load_data
from babysit.data.preprocess import PCA, Standardize, Whiten
from babysit.nn import apply_init, cnn, mlp

# Severities a healthy set-up may show: info findings only (the lr suggestion, a note about
# normalization).
HEALTHY_ALLOWED = {"info"}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], tuple[nn.Module, object, dict]]
    expect: frozenset[str] = field(default_factory=frozenset)  # empty: healthy
    fast: bool = False  # in the default test run

    @property
    def healthy(self) -> bool:
        return not self.expect


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, val = load_data("digits", seed=0)
    return (*train.tensors, *val.tensors)


@functools.cache
def digits_standardized() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y, vx, vy = digits()
    t = Standardize().fit(x)
    return t.transform(x), y, t.transform(vx), vy


def std_data(flat: bool = False):
    x, y, _, _ = digits_standardized()
    return (x.flatten(1) if flat else x, y)


def _seeded(fn):
    @functools.wraps(fn)
    def wrapper():
        torch.manual_seed(0)
        return fn()

    return wrapper


def _mlp(hidden, activation="relu", init="he", **kw) -> nn.Module:
    return mlp(64, hidden, 10, activation=activation, init=init, **kw)


def healthy_mlp(hidden, activation="relu", init="he", **kw):
    return _seeded(lambda: (_mlp(hidden, activation, init, **kw), std_data(), {}))


def healthy_cnn(channels, activation="relu", init="he", **kw):
    return _seeded(
        lambda: (cnn(1, 8, channels, 10, activation=activation, init=init, **kw), std_data(), {})
    )


# --- hand-written models (not built by babysit) --------------------------------------------


class Clamped(nn.Module):
    """A bug: the logits are clamped to [-1, 1], so the loss cannot get near 0."""

    def __init__(self):
        super().__init__()
        self.body = _mlp([100, 100])

    def forward(self, x):
        return self.body(x).clamp(-1, 1)


class Detached(nn.Module):
    """A bug: the first layer's output is detached, so it never learns."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 100)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(100, 100)
        self.act2 = nn.ReLU()
        self.logits = nn.Linear(100, 10)
        apply_init(self, "he")

    def forward(self, x):
        h = self.act1(self.fc1(self.flatten(x))).detach()
        return self.logits(self.act2(self.fc2(h)))


class FunctionalSoftmax(nn.Module):
    """A bug: softmax in forward, before CrossEntropyLoss."""

    def __init__(self):
        super().__init__()
        self.body = _mlp([100, 100])

    def forward(self, x):
        return torch.softmax(self.body(x), dim=1)


def _with(model: nn.Module, fn) -> nn.Module:
    with torch.no_grad():
        fn(model)
    return model


def _scale_last(factor):
    def build():
        model = _mlp([100, 100])
        return _with(model, lambda m: m.logits.weight.mul_(factor)), std_data(), {}

    return _seeded(build)


def _negative_bias():
    def build():
        model = _mlp([100, 100])

        def kill(m):
            m.fc1.bias.fill_(-5.0)

        return _with(model, kill), std_data(), {}

    return _seeded(build)


def _all_constant(value):
    def build():
        model = _mlp([100, 100])

        def fill(m):
            for p in m.parameters():
                p.fill_(value)

        return _with(model, fill), std_data(), {}

    return _seeded(build)


def _frozen():
    model = _mlp([100, 100])
    model.requires_grad_(False)
    return model, std_data(), {}


def _shuffled_labels():
    x, y = std_data()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    return _mlp([100, 100]), (x, y[perm]), {}


def _labels_out_of_range():
    x, y = std_data()
    return _mlp([100, 100]), (x, y + 1), {}


def _nan_inputs():
    x, y = std_data()
    x = x.clone()
    x[3, 0, 2, 2] = math.nan
    x[10, 0, 0, 0] = math.inf
    return _mlp([100, 100]), (x, y), {}


def _raw(scale=1.0, shift=0.0):
    def build():
        x, y, _, _ = digits()
        return _mlp([100, 100]), (x * scale + shift, y), {}

    return _seeded(build)


def _shifted():
    x, y = std_data()
    return _mlp([100, 100]), (x + 4.0, y), {}


def _softmax_module():
    model = _mlp([100, 100])
    model.add_module("softmax", nn.Softmax(dim=1))
    return model, std_data(), {}


def _single_softmax():
    model = mlp(64, [32], 1)
    model.add_module("softmax", nn.Softmax(dim=1))
    x, y = std_data()
    keep = y < 2
    return model, (x[keep], y[keep].float()[:, None]), {"loss_fn": nn.BCELoss()}


def _linear_stack():
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 100), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )
    return model, std_data(), {}


def _bce_probabilities_without_sigmoid():
    x, y = std_data()
    keep = y < 2
    return mlp(64, [32], 1), (x[keep], y[keep].float()[:, None]), {"loss_fn": nn.BCELoss()}


def _binary():
    x, y = std_data()
    keep = y < 2
    model = mlp(64, [64, 64], 1)
    return model, (x[keep], y[keep].float()[:, None]), {"loss_fn": nn.BCEWithLogitsLoss()}


def _one_hot(loss_fn):
    def build():
        x, y = std_data()
        target = nn.functional.one_hot(y, 10).float()
        return _mlp([100, 100]), (x, target), {"loss_fn": loss_fn}

    return _seeded(build)


def _regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 20, generator=g)
    w = torch.randn(20, 1, generator=g) / math.sqrt(20)
    y = torch.tanh(x @ w * 2) + 0.05 * torch.randn(1200, 1, generator=g)
    return mlp(20, [64, 64], 1), (x, y), {"loss_fn": nn.MSELoss()}


def _synthetic(shape="64", model=None):
    def build():
        train, _ = load_data(f"synthetic:n=1200,shape={shape},classes=10", seed=0)
        x, y = train.tensors
        net = model() if model else mlp(x.shape[1:], [100, 100], 10)
        return net, (x, y), {}

    return _seeded(build)


def _preprocessed(transform):
    def build():
        x, y, _, _ = digits()
        t = transform().fit(x)
        return _mlp([100, 100]), (t.transform(x), y), {}

    return _seeded(build)


def _hand_written_torch_default():
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    return model, std_data(), {}


def _nll():
    model = _mlp([100, 100])
    model.add_module("log_softmax", nn.LogSoftmax(dim=1))
    return model, std_data(), {"loss_fn": nn.NLLLoss()}


def _full(train_n, hidden, activation="relu", **kw):
    def build():
        x, y, vx, vy = digits_standardized()
        model = _mlp(hidden, activation, **kw)
        return model, (x[:train_n], y[:train_n]), {"val_data": (vx, vy), "quick": False}

    return _seeded(build)


def _lr(hidden, lr, optimizer="sgd"):
    return _seeded(lambda: (_mlp(hidden), std_data(), {"lr": lr, "optimizer": optimizer}))


class Residual(nn.Module):
    """A small ResNet-style CNN with BatchNorm: skip connections written in forward."""

    def __init__(self, channels: int = 16, blocks: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
            )
            for _ in range(blocks)
        )
        self.act, self.pool = nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = self.act(h + block(h))
        return self.fc(self.pool(h).flatten(1))


def _gaussian_task(init):
    """The lecture's set-up: 10 layers of 500 units on unit-Gaussian inputs (here with
    labels a linear map of the inputs decides, so that they can be learnt)."""

    def build():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2000, 500, generator=g)
        y = (x @ torch.randn(500, 10, generator=g)).argmax(1)
        return mlp(500, [500] * 10, 10, activation="tanh", init=init), (x, y), {}

    return _seeded(build)


def _shuffled_cnn():
    x, y = std_data()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    return cnn(1, 8, [16, 32], 10), (x, y[perm]), {}


def _autoencoder():
    x, _ = std_data(flat=True)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64))
    return model, (x, x), {"loss_fn": nn.MSELoss()}


def _lsuv():
    x, _ = std_data()
    return mlp(64, [100] * 6, 10, init="lsuv", init_data=x[:256]), std_data(), {}


H, F = frozenset(), frozenset
CASES: list[Case] = [
    # ---- healthy -------------------------------------------------------------------------
    Case("mlp relu he 2x100", healthy_mlp([100, 100]), H, fast=True),
    Case("mlp relu he 10x100", healthy_mlp([100] * 10)),
    Case("mlp tanh xavier 3x100", healthy_mlp([100] * 3, "tanh", "xavier"), H),
    Case("mlp tanh xavier 8x100", healthy_mlp([100] * 8, "tanh", "xavier")),
    Case("mlp leaky he 4x100", healthy_mlp([100] * 4, "leaky_relu")),
    Case("mlp elu he 6x64", healthy_mlp([64] * 6, "elu")),
    Case("mlp relu orthogonal 3x100", healthy_mlp([100] * 3, "relu", "orthogonal")),
    Case("mlp relu torch 2x100", healthy_mlp([100, 100], "relu", "torch")),
    Case("mlp relu torch 3x100", healthy_mlp([100] * 3, "relu", "torch")),
    Case("mlp relu xavier 2x100", healthy_mlp([100, 100], "relu", "xavier")),
    Case("mlp relu he bn 8x100", healthy_mlp([100] * 8, batch_norm=True)),
    Case("mlp relu small bn 6x100", healthy_mlp([100] * 6, "relu", "small", batch_norm=True)),
    Case("mlp relu he dropout", healthy_mlp([100, 100], dropout=0.2)),
    Case("mlp relu lsuv 6x100", _seeded(_lsuv)),
    Case("mlp maxout he 2x64", healthy_mlp([64, 64], "maxout")),
    Case("hand-written torch default", _seeded(_hand_written_torch_default), H),
    Case("cnn relu he 16-32", healthy_cnn([16, 32]), H, fast=True),
    Case("cnn relu torch 16-32-32", healthy_cnn([16, 32, 32], "relu", "torch")),
    Case("cnn tanh xavier 16-32", healthy_cnn([16, 32], "tanh", "xavier")),
    Case("cnn relu small bn 16-32-32", healthy_cnn([16, 32, 32], "relu", "small", batch_norm=True)),
    Case("residual cnn with bn", _seeded(lambda: (Residual(), std_data(), {}))),
    Case("mlp gelu he 3x128", healthy_mlp([128] * 3, "gelu")),
    Case("mlp autoencoder mse", _seeded(_autoencoder)),
    Case("lecture 10x500 tanh xavier", _gaussian_task("xavier")),
    Case("mlp synthetic 64", _synthetic()),
    Case("cnn synthetic 3x16x16", _synthetic("3x16x16", lambda: cnn(3, 16, [16, 32], 10))),
    Case("mlp pca-whitened digits", _preprocessed(lambda: PCA(whiten=True))),
    Case("mlp zca digits", _preprocessed(lambda: Whiten(kind="zca"))),
    Case("mlp bce binary", _seeded(_binary), H, fast=True),
    Case("mlp bce one-hot", _one_hot(nn.BCEWithLogitsLoss())),
    Case("mlp mse one-hot", _one_hot(nn.MSELoss())),
    Case("mlp mse regression", _seeded(_regression), H, fast=True),
    Case(
        "mlp ce label smoothing",
        _seeded(
            lambda: (
                _mlp([100, 100]),
                std_data(),
                {"loss_fn": nn.CrossEntropyLoss(label_smoothing=0.1)},
            )
        ),
    ),
    Case("mlp nll log-softmax", _seeded(_nll)),
    Case("mlp sgd lr 0.05", _lr([100, 100], 0.05), H),
    Case("mlp momentum lr 0.02", _lr([100, 100], 0.02, "momentum")),
    Case("mlp adam lr 1e-3", _lr([100, 100], 1e-3, "adam"), H),
    Case("full: digits mlp", _full(1437, [100, 100])),
    # ---- faults --------------------------------------------------------------------------
    Case("raw digits 0..16", _raw(), F({"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}), fast=True),
    Case("raw pixels 0..255", _raw(255 / 16), F({"DATA_NOT_CENTERED", "DATA_NOT_SCALED"})),
    Case("un-centred features", _seeded(_shifted), F({"DATA_NOT_CENTERED"})),
    Case("NaN inputs", _seeded(_nan_inputs), F({"DATA_NONFINITE"}), fast=True),
    Case("labels out of range", _seeded(_labels_out_of_range), F({"LABELS_INVALID"}), fast=True),
    Case(
        "sigmoid stack 6x100",
        healthy_mlp([100] * 6, "sigmoid", "xavier"),
        F({"SIGMOID_HIDDEN"}),
    ),
    Case(
        "small init tanh 8x100",
        healthy_mlp([100] * 8, "tanh", "small"),
        F({"INIT_VANISHING"}),
    ),
    Case("small init relu 6x100", healthy_mlp([100] * 6, "relu", "small"), F({"INIT_VANISHING"})),
    Case(
        "xavier under relu 12x100", healthy_mlp([100] * 12, "relu", "xavier"), F({"INIT_VANISHING"})
    ),
    Case(
        "large init tanh 6x100",
        healthy_mlp([100] * 6, "tanh", "large"),
        F({"INIT_SATURATED"}),
    ),
    Case("large init relu 4x100", healthy_mlp([100] * 4, "relu", "large"), F({"INIT_EXPLODING"})),
    Case(
        "small init cnn 5 conv",
        healthy_cnn([16, 16, 16, 16, 16], "relu", "small"),
        F({"INIT_VANISHING"}),
    ),
    Case(
        "large init cnn 4 conv",
        healthy_cnn([16, 16, 16, 16], "relu", "large"),
        F({"INIT_EXPLODING"}),
    ),
    Case("negative biases", _negative_bias(), F({"DEAD_UNITS"})),
    Case("zero init", _all_constant(0.0), F({"INIT_SYMMETRIC"}), fast=True),
    Case("constant init", _all_constant(0.05), F({"INIT_SYMMETRIC"})),
    Case("last layer x20", _scale_last(20.0), F({"INIT_LOSS_MISMATCH"}), fast=True),
    Case("softmax module before CE", _seeded(_softmax_module), F({"OUTPUT_ACTIVATION"})),
    Case(
        "softmax in forward before CE",
        _seeded(lambda: (FunctionalSoftmax(), std_data(), {})),
        F({"OUTPUT_ACTIVATION"}),
    ),
    Case("softmax over one unit", _seeded(_single_softmax), F({"OUTPUT_ACTIVATION"})),
    Case(
        "BCELoss on raw scores",
        _seeded(_bce_probabilities_without_sigmoid),
        F({"OUTPUT_ACTIVATION"}),
    ),
    Case("two linear layers in a row", _seeded(_linear_stack), F({"NO_NONLINEARITY"}), fast=True),
    Case("frozen model", _seeded(_frozen), F({"CANNOT_OVERFIT"}), fast=True),
    Case("lecture 10x500 tanh 0.01", _gaussian_task("small"), F({"INIT_VANISHING"})),
    Case("lecture 10x500 tanh 1.0", _gaussian_task("large"), F({"INIT_SATURATED"})),
    Case("cnn shuffled labels", _seeded(_shuffled_cnn), F({"LABELS_UNLEARNABLE"})),
    Case(
        "clamped logits",
        _seeded(lambda: (Clamped(), std_data(), {})),
        F({"CANNOT_OVERFIT"}),
    ),
    Case(
        "detached first layer",
        _seeded(lambda: (Detached(), std_data(), {})),
        F({"UPDATE_RATIO_LOW"}),
    ),
    Case("shuffled labels", _seeded(_shuffled_labels), F({"LABELS_UNLEARNABLE"}), fast=True),
    Case("sgd lr 100x too high", _lr([100, 100], 5.0), F({"LR_TOO_HIGH"}), fast=True),
    Case("sgd lr 100x too low", _lr([100, 100], 5e-4), F({"LR_TOO_LOW"}), fast=True),
    Case("adam lr 1.0", _lr([100, 100], 1.0, "adam"), F({"LR_TOO_HIGH"})),
    Case("adam lr 1e-6", _lr([100, 100], 1e-6, "adam"), F({"LR_TOO_LOW"})),
    Case("full: 60 examples, wide mlp", _full(60, [256, 256]), F({"OVERFITTING"})),
    Case("full: 2 hidden units", _full(1437, [2], "relu"), F({"UNDERFITTING"})),
]


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def _summary(report) -> str:
    m = report.measurements
    parts = []
    d = m.get("data", {})
    if d:
        parts.append(
            f"ctr {d.get('offset_ratio', math.nan):.2g} scale {d.get('std_rms', math.nan):.2g}"
        )
    i = m.get("init", {})
    if "forward_change" in i:
        parts.append(f"fwd {i['forward_change']:.2g} bwd {i['backward_change']:.2g}")
    layers = m.get("layers", [])
    sat = [s["saturated_fraction"] for s in layers if s.get("saturated_fraction") is not None]
    dead = [s["dead_fraction"] for s in layers if s.get("dead_fraction") is not None]
    if sat:
        parts.append(f"sat {max(sat):.2f}")
    if dead:
        parts.append(f"dead {max(dead):.2f}")
    il = m.get("initial_loss", {})
    if il.get("ratio") is not None:
        parts.append(f"L0 {il['ratio']:.2f}x")
    o = m.get("overfit", {})
    if o.get("final_loss") is not None:
        parts.append(f"fit {o['final_loss'] / max(o['initial_loss'], 1e-12):.3f}")
    le = m.get("learnable", {})
    if le.get("held_out_accuracy") is not None:
        parts.append(
            f"held {le['held_out_accuracy']:.2f}/{le['chance']:.2f} tr {le['train_accuracy']:.2f}"
        )
    r = m.get("regularization", {})
    if r.get("rise") is not None:
        parts.append(f"reg {r['rise']:.2f}")
    lr = m.get("lr", {})
    run = lr.get("run", {})
    if run:
        ratios = [v for v in run.get("update_ratios", {}).values() if v is not None]
        if ratios:
            parts.append(f"ratio {min(ratios):.1e}..{max(ratios):.1e}")
        if run.get("decrease") is not None:
            parts.append(f"dec {run['decrease']:.3f}")
    ref = lr.get("reference_run")
    if ref:
        parts.append(f"ref dec {ref['decrease']:.3f}")
    t = m.get("training", {})
    if t.get("gap") is not None:
        parts.append(f"acc {t['train_accuracy']:.2f}/{t['val_accuracy']:.2f}")
    return " ".join(parts)


def main(names: list[str]) -> None:
    """Print, per case, the codes found and the measurements the thresholds are set on."""
    import time

    import babysit as bs

    torch.set_num_threads(1)
    for c in CASES:
        if names and not any(n in c.name for n in names):
            continue
        model, data, kwargs = c.build()
        start = time.perf_counter()
        report = bs.checkup(model, data, **kwargs)
        codes = sorted({f.code for f in report.findings if f.severity != "info"})
        ok = not codes if c.healthy else c.expect <= {f.code for f in report.findings}
        print(
            f"{'ok ' if ok else 'BAD'} {c.name:30s} {time.perf_counter() - start:5.1f}s "
            f"{','.join(codes) or '-':40s} {_summary(report)}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
