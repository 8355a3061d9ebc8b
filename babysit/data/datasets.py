"""`load_data(spec)`: a data set by name, split into train and val, validated at the boundary.

Specs: "digits" (bundled, offline), "cifar10:DIR", "npz:FILE", "synthetic:KEY=VAL,...".
Inputs come back raw (digits 0..16, CIFAR-10 0..255), never normalised, so that the checkup
sees the data as the user has it; fit a `babysit.data.preprocess` transform on train to
centre or whiten it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from babysit._validation import check_scalar
from babysit.data.files import (  # noqa: F401  (CIFAR10_* re-exported)
    CIFAR10_CLASSES,
    CIFAR10_SHAPE,
    CIFAR10_SUBDIR,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    CIFAR10_URL,
    _load_cifar10,
    _load_npz,
)
from babysit.errors import DataError, UsageError

__all__ = [
    "SOURCES",
    "SPECS",
    "SYNTHETIC_DEFAULTS",
    "DataSource",
    "Splits",
    "as_tensors",
    "load_data",
    "specs_help",
]

# torch's cross_entropy skips targets equal to this: per-position labels use it for padding.
TORCH_IGNORE_INDEX = -100

SYNTHETIC_DEFAULTS = {"n": 1000, "shape": (64,), "classes": 10, "seed": 0}
# Distance between two class means, in units of the per-feature noise std, whatever the
# input size: the class means are drawn N(0, s^2 I) with s = distance / sqrt(2 D). At 6, the
# nearest class-mean rule errs on about 9 * Phi(-3) ~ 1% of examples with 10 classes (our
# arithmetic), so the data is learnable but a model still has something to learn; each
# feature has variance 1 + 18 / D, i.e. unit scale.
SYNTHETIC_MEAN_DISTANCE = 6.0
_SYNTHETIC_CHUNK_ROWS = 8192

# When the number of classes is inferred as max(label) + 1, a label that is a typo (999999
# among 0..9) would size the model's head: a million outputs, gigabytes, a hang. Labels more
# than this many times the number of distinct labels, and above MIN_SUSPECT_CLASSES, are taken
# for such typos: C comes from the others and they stay outside [0, C) (LABELS_INVALID).
# 1000 keeps a sparse sample of ImageNet's 1000 classes as it is; 10x is our choice.
SUSPECT_CLASS_RATIO = 10
MIN_SUSPECT_CLASSES = 1000


class Splits(tuple):
    """`(train, val)`, so that `train, val = load_data(...)` works, plus the facts about the
    data set: `.test` (a Dataset or None), `.classes`, `.input_shape` (per example), `.name`.
    """

    test: TensorDataset | None
    classes: int
    input_shape: tuple[int, ...]
    name: str

    def __new__(
        cls,
        train: TensorDataset,
        val: TensorDataset | None,
        test: TensorDataset | None = None,
        classes: int = 0,
        input_shape: tuple[int, ...] = (),
        name: str = "",
    ) -> Splits:
        splits = super().__new__(cls, (train, val))
        splits.test = test
        splits.classes = int(classes)
        splits.input_shape = tuple(input_shape)
        splits.name = name
        return splits

    def __getnewargs__(self) -> tuple:
        return (self[0], self[1], self.test, self.classes, self.input_shape, self.name)

    @property
    def train(self) -> TensorDataset:
        return self[0]

    @property
    def val(self) -> TensorDataset | None:
        return self[1]

    def __repr__(self) -> str:
        train, val, test = (None if d is None else len(d) for d in (*self, self.test))
        return (
            f"Splits(name={self.name!r}, train={train}, val={val}, test={test}, "
            f"classes={self.classes}, input_shape={self.input_shape})"
        )


def load_data(
    spec: str = "digits", val_fraction: float = 0.2, seed: int = 0, validate: bool = True
) -> Splits:
    """Load the data set named by `spec` and split it into (train, val) with a seeded shuffle.

    train/val/test are TensorDatasets of (float32 inputs shaped (N, *input_shape), int64
    labels). `val_fraction` of the examples (rounded) go to val; with 0, val is None. `seed`
    fixes the split. With `validate=True`, NaN/inf inputs, non-integer labels and labels
    outside [0, classes) raise a DataError; with False they pass through unchanged (the
    checkup reports them as findings) and only structural problems raise.
    """
    if not isinstance(spec, str):
        raise UsageError(f"data spec must be a string such as 'digits', got {spec!r}")
    check_scalar(
        val_fraction,
        "val_fraction",
        float,
        min=0,
        max=1,
        include_max=False,
        fix="use e.g. 0.2, or 0 for no validation split",
    )
    kind, sep, arg = spec.partition(":")
    source = SOURCES.get(kind.strip().lower())
    if source is None:
        known = ", ".join(s.usage for s in SOURCES.values())
        raise DataError(f"unknown data spec {spec!r}: use one of {known}")
    if source.argument == "required" and not arg.strip():
        raise DataError(
            f"data spec {spec!r} needs its {source.usage.partition(':')[2]}: write {source.usage}"
        )
    if source.argument == "none" and arg.strip():
        raise DataError(f"data spec {spec!r} takes no argument: write {source.usage}")
    x, y, x_test, y_test, classes = source.load(arg)

    x, y = _numeric(x, y, spec)
    if x_test is not None:
        x_test, y_test = _numeric(x_test, y_test, f"{spec} (test)")
    if classes is None:  # max label + 1, over train and test alike, typos aside
        classes = _infer_classes([labels for labels in (y, y_test) if labels is not None])
        if validate:
            _refuse_suspect_labels([(y, spec), (y_test, f"{spec} (test)")], classes)
    x, y = _check(x, y, classes, spec, validate)
    test = None
    if x_test is not None:
        x_test, y_test = _check(x_test, y_test, classes, f"{spec} (test)", validate)
        test = TensorDataset(_float_inputs(x_test), y_test)
    train, val = _split(x, y, val_fraction, seed, spec)
    return Splits(train, val, test, classes, tuple(x.shape[1:]), spec)


def as_tensors(data: object) -> tuple[Tensor, Tensor]:
    """(X, y) tensors from a TensorDataset, a map-style Dataset of (x, y) items, or an (X, y)
    pair of tensors or NumPy arrays. Dtypes are kept as given (NumPy arrays are not copied).
    """
    if isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise UsageError(
                f"TensorDataset holds {len(data.tensors)} tensor(s), expected (inputs, labels): "
                f"build it as TensorDataset(X, y)"
            )
        return data.tensors[0], data.tensors[1]
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(a, (Tensor, np.ndarray)) for a in data)
    ):
        x, y = (_as_tensor(a) for a in data)
        if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
            raise UsageError(
                f"(X, y) must hold one label per example, got X of shape {tuple(x.shape)} and "
                f"y of shape {tuple(y.shape)}: pass X shaped (N, ...) and y shaped (N,)"
            )
        return x, y
    if isinstance(data, IterableDataset) or (
        isinstance(data, Dataset) and not hasattr(data, "__len__")
    ):
        raise UsageError(
            f"{type(data).__name__} has no length, so its examples cannot be indexed: pass a "
            f"map-style Dataset (with __len__ and __getitem__) or an (X, y) pair of tensors"
        )
    if isinstance(data, (Dataset, Sequence)) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            raise UsageError("the data set is empty: pass at least one (x, y) example")
        items = [data[i] for i in range(len(data))]
        bad = [i for i, item in enumerate(items) if not isinstance(item, (tuple, list))]
        bad += [i for i, item in enumerate(items) if i not in bad and len(item) < 2]
        if bad:
            raise UsageError(
                f"dataset items must be (x, y) pairs, got {type(items[bad[0]]).__name__} "
                f"{items[bad[0]]!r:.40} at index {bad[0]}: make __getitem__ return (input, label)"
            )
        try:
            return (
                torch.stack([_as_tensor(item[0]) for item in items]),
                torch.stack([_as_tensor(item[1]) for item in items]),
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise UsageError(
                f"cannot stack the dataset's (x, y) items into tensors ({e}): make every item "
                f"return an input of the same shape and a numeric label"
            ) from None
    raise UsageError(
        f"cannot read examples from a {type(data).__name__}: pass a TensorDataset, a map-style "
        f"Dataset of (x, y) items, or an (X, y) pair of tensors or arrays"
    )


def _as_tensor(a: object) -> Tensor:
    if isinstance(a, Tensor):
        return a
    with warnings.catch_warnings():  # read-only arrays: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(np.asarray(a) if not isinstance(a, np.ndarray) else a)


# --- the loaders return raw arrays: (x, y, x_test, y_test, classes or None) ----------------


def _load_digits() -> tuple:
    from sklearn.datasets import load_digits  # imported here: sklearn takes ~1 s to import

    digits = load_digits()
    x = torch.from_numpy(digits.data.astype(np.float32)).reshape(-1, 1, 8, 8)
    return x, torch.from_numpy(digits.target.astype(np.int64)), None, None, 10


def _make_synthetic(arg: str) -> tuple:
    """Class-conditional Gaussians: x = mean[y] + N(0, I), see SYNTHETIC_MEAN_DISTANCE."""
    params = _parse_synthetic(arg)
    n, shape, classes = params["n"], params["shape"], params["classes"]
    features = math.prod(shape)
    generator = torch.Generator().manual_seed(params["seed"])
    scale = SYNTHETIC_MEAN_DISTANCE / math.sqrt(2 * features)
    means = torch.randn(classes, features, generator=generator) * scale
    y = torch.randint(classes, (n,), generator=generator)
    x = torch.randn(n, features, generator=generator)
    for start in range(0, n, _SYNTHETIC_CHUNK_ROWS):  # in chunks: means[y] is as big as x
        rows = slice(start, start + _SYNTHETIC_CHUNK_ROWS)
        x[rows] += means[y[rows]]
    return x.reshape(n, *shape), y, None, None, classes


def _parse_synthetic(arg: str) -> dict:
    params = dict(SYNTHETIC_DEFAULTS)
    example = "synthetic:n=2000,shape=3x32x32,classes=10,seed=0"
    for item in filter(None, (s.strip() for s in arg.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if key not in SYNTHETIC_DEFAULTS:
            raise DataError(
                f"unknown synthetic key {key!r}: use {', '.join(SYNTHETIC_DEFAULTS)}, "
                f"e.g. {example}"
            )
        try:
            if not sep:
                raise ValueError
            parsed = tuple(int(v) for v in value.lower().split("x"))
        except ValueError:
            raise DataError(
                f"synthetic {key}={value!r} is not {'a shape' if key == 'shape' else 'an integer'}"
                f": write e.g. {example}"
            ) from None
        if key != "shape" and len(parsed) != 1:
            raise DataError(f"synthetic {key}={value!r} is not an integer: write e.g. {example}")
        params[key] = parsed if key == "shape" else parsed[0]
    minimum = {"n": 1, "classes": 1, "seed": 0}
    for key, low in minimum.items():
        if params[key] < low:
            raise DataError(f"synthetic {key}={params[key]} must be >= {low}: e.g. {example}")
    if any(d < 1 for d in params["shape"]):
        raise DataError(
            f"synthetic shape {params['shape']} must be positive sizes: e.g. shape=3x32x32"
        )
    return params


# --- the registry: load_data, the CLI's help and the error messages all read it ------------


@dataclass(frozen=True)
class DataSource:
    """A data set by name: `usage` is how a spec names it ("npz:FILE"), `argument` whether the
    part after the colon is "required", "optional" or "none", and `load(arg)` returns the raw
    arrays (x, y, x_test, y_test, classes or None to take max(label) + 1)."""

    name: str
    usage: str
    summary: str
    argument: str
    load: Callable[[str], tuple]


def _path(arg: str) -> Path:
    return Path(arg.strip()).expanduser()


SOURCES: dict[str, DataSource] = {
    source.name: source
    for source in (
        DataSource("digits", "digits", "bundled 8x8 digits", "none", lambda arg: _load_digits()),
        DataSource(
            "cifar10",
            "cifar10:DIR",
            "the CIFAR-10 python batches",
            "required",
            lambda arg: _load_cifar10(_path(arg)),
        ),
        DataSource(
            "npz",
            "npz:FILE",
            "arrays x, y (x_test, y_test) in a .npz",
            "required",
            lambda arg: _load_npz(_path(arg)),
        ),
        DataSource(
            "synthetic",
            "synthetic:KEY=VAL,...",
            f"Gaussian classes; keys {', '.join(SYNTHETIC_DEFAULTS)}",
            "optional",
            _make_synthetic,
        ),
    )
}
SPECS = tuple(source.usage for source in SOURCES.values())


def specs_help() -> str:
    """One line for help texts: every data source with what it is."""
    return "; ".join(f"{source.usage} ({source.summary})" for source in SOURCES.values())


# --- boundary checks and the split ---------------------------------------------------------


def _numeric(x: object, y: object, name: str) -> tuple[Tensor, Tensor]:
    try:
        x, y = _as_tensor(x), _as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        dtypes = [str(getattr(a, "dtype", type(a).__name__)) for a in (x, y)]
        raise DataError(
            f"{name}: inputs and labels must be numeric arrays, got dtypes {dtypes}: "
            f"convert them to numbers (e.g. class names to indices 0..C-1)"
        ) from None
    if x.is_complex() or y.is_complex():
        raise DataError(f"{name}: complex inputs or labels are not supported: pass real numbers")
    if x.dim() == 0 or y.dim() == 0:
        raise DataError(
            f"{name}: inputs and labels must be arrays of examples, got a single value (inputs "
            f"of shape {tuple(x.shape)}, labels of shape {tuple(y.shape)}): save x shaped "
            f"(N, ...) and y shaped (N,)"
        )
    return x, y


def _finite_labels(y: Tensor) -> Tensor:
    return y[torch.isfinite(y)] if y.is_floating_point() else y.to(torch.int64)


def _suspect_cutoff(labels: Sequence[Tensor]) -> float:
    """Labels at or above this are typos, not classes (see SUSPECT_CLASS_RATIO)."""
    values = torch.cat([_finite_labels(y).double().flatten() for y in labels])
    distinct = len(torch.unique(values)) if len(values) else 0
    return float(max(SUSPECT_CLASS_RATIO * distinct, MIN_SUSPECT_CLASSES))


def _infer_classes(labels: Sequence[Tensor]) -> int:
    """max(label) + 1 over the finite labels, at least 1, leaving out labels far above the
    others (typos that would size the model's head, see SUSPECT_CLASS_RATIO)."""
    cutoff = _suspect_cutoff(labels)
    highest = -1
    for y in labels:
        finite = _finite_labels(y)
        kept = finite[finite < cutoff]
        if len(kept):
            highest = max(highest, math.floor(kept.max().item()))
    return max(highest + 1, 1)


def _refuse_suspect_labels(named: Sequence[tuple[Tensor | None, str]], classes: int) -> None:
    present = [y for y, _ in named if y is not None]
    cutoff = _suspect_cutoff(present)
    for y, name in named:
        if y is None:
            continue
        finite = _finite_labels(y)
        suspect = finite >= cutoff
        if suspect.any():
            first = int(suspect.nonzero()[0, 0])
            raise DataError(
                f"{name}: {int(suspect.sum())} labels lie far above the others (first at "
                f"example {first}: {finite[first].item():g}, while the others make {classes} "
                f"classes); taken as classes they would size the model's output layer: map "
                f"them to class indices 0..{classes - 1} or drop those examples"
            )


def _per_position(x: Tensor, y: Tensor) -> bool:
    """Labels with one class per position: (N, T) against (N, T) token ids (a language model,
    a tagger), or (N, H, W) against (N, C, H, W) images (segmentation)."""
    return y.dim() >= 2 and (y.shape[1:] == x.shape[1:] or y.shape[1:] == x.shape[2:])


def _check(x: Tensor, y: Tensor, classes: int, name: str, validate: bool) -> tuple[Tensor, Tensor]:
    """Structural checks always; NaN and label checks when `validate`. Returns the inputs as
    given and int64 labels (or the float labels as given, when not integral and not validated)."""
    if x.dim() < 2 or len(x) == 0:
        raise DataError(
            f"{name}: inputs must be shaped (N, ...) with N >= 1 examples, got shape "
            f"{tuple(x.shape)}: reshape a single feature to (N, 1)"
        )
    if len(y) != len(x) or not (y.dim() == 1 or _per_position(x, y)):
        raise DataError(
            f"{name}: expected one label per example, shape ({len(x)},), or one per position "
            f"(shaped like the inputs' positions, e.g. ({len(x)}, T) for ({len(x)}, T) token "
            f"ids), got labels of shape {tuple(y.shape)} for inputs {tuple(x.shape)}: pass "
            f"class indices"
        )
    if validate and x.is_floating_point():
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        if not finite.all():
            bad = (~finite).nonzero().flatten()
            count = int((~torch.isfinite(x)).sum())
            raise DataError(
                f"{name}: {count} NaN/inf input values in {len(bad)} examples (first at "
                f"example {int(bad[0])}): drop or impute those examples before training"
            )
    labels, integral = _integer_labels(y)
    if validate and not integral:
        wrong = ~_is_integral(y)
        example = int(wrong.reshape(len(y), -1).any(1).nonzero()[0])
        first = y[example][wrong[example]].flatten()[0] if y.dim() > 1 else y[example]
        raise DataError(
            f"{name}: {int(wrong.sum())} labels are not integers (first at example {example}: "
            f"{first.item()!r}): labels must be class indices 0..C-1"
        )
    if validate:
        outside = (labels < 0) | (labels >= classes)
        if labels.dim() > 1:  # positions to skip (padding) carry torch's ignore_index
            outside &= labels != TORCH_IGNORE_INDEX
        if outside.any():
            example = int(outside.reshape(len(y), -1).any(1).nonzero()[0])
            first = (
                labels[example][outside[example]].flatten()[0] if y.dim() > 1 else (labels[example])
            )
            raise DataError(
                f"{name}: {int(outside.sum())} labels outside [0, {classes}) (first at example "
                f"{example}: {first.item()}, range seen {labels.min().item()}.."
                f"{labels.max().item()}): map them to class indices 0..{classes - 1}"
                + (f" ({TORCH_IGNORE_INDEX} marks positions to skip)" if y.dim() > 1 else "")
            )
    return x, labels


def _is_integral(y: Tensor) -> Tensor:
    if not y.is_floating_point():
        return torch.ones_like(y, dtype=torch.bool)
    return torch.isfinite(y) & (y == y.round())


def _integer_labels(y: Tensor) -> tuple[Tensor, bool]:
    """(int64 labels, True) when every label is integral, else (labels as given, False)."""
    if y.dtype == torch.bool or not y.is_floating_point():
        return y.to(torch.int64), True
    if bool(_is_integral(y).all()):
        return y.to(torch.int64), True
    return y, False


def _split(
    x: Tensor, y: Tensor, val_fraction: float, seed: int, name: str
) -> tuple[TensorDataset, TensorDataset | None]:
    n = len(x)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and not 0 < n_val < n:
        raise DataError(
            f"{name}: val_fraction={val_fraction} of {n} examples leaves an empty split "
            f"({n - n_val} train, {n_val} val): use more data or val_fraction=0"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index, train_index = order[:n_val], order[n_val:]
    train = TensorDataset(_float_inputs(x[train_index]), y[train_index])
    val = TensorDataset(_float_inputs(x[val_index]), y[val_index]) if n_val else None
    return train, val


def _float_inputs(x: Tensor) -> Tensor:
    """float32 inputs, except signed integers: those are token ids or categories, indices
    that an nn.Embedding takes as int64 and that must never be standardized. Unsigned 8-bit
    (pixels) and booleans become float32."""
    if not (x.is_floating_point() or x.is_complex()) and x.dtype not in (torch.uint8, torch.bool):
        return x.to(torch.int64)
    return x if x.dtype == torch.float32 else x.to(torch.float32)
