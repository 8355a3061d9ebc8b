"""`load_data(spec)`: a data set by name, split into train and val, validated at the boundary.

Specs: "digits" (bundled, offline), "cifar10:DIR", "npz:FILE", "synthetic:KEY=VAL,...".
Inputs come back raw (digits 0..16, CIFAR-10 0..255), never normalised, so that the checkup
sees the data as the user has it; fit a `babysit.data.preprocess` transform on train to
centre or whiten it.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from babysit._validation import check_scalar
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

# The CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar.html): five training
# batches of 10,000 images and one test batch, each row 3072 bytes = 1024 R, 1024 G, 1024 B
# of a 32x32 image in row-major order.
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_CLASSES = 10
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

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


def _load_cifar10(root: Path) -> tuple:
    if not root.is_dir():
        raise DataError(
            f"CIFAR-10 directory {str(root)!r} does not exist: download the python version "
            f"from {CIFAR10_URL} and pass the folder that holds data_batch_1..5"
        )
    folder = root / CIFAR10_SUBDIR if (root / CIFAR10_SUBDIR).is_dir() else root
    wanted = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 directory {str(folder)!r} lacks {', '.join(missing)}: pass the "
            f"extracted '{CIFAR10_SUBDIR}' folder of the python version from {CIFAR10_URL}"
        )
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    # Kept as uint8 until after the split, so the float32 copy is made only once.
    return torch.from_numpy(x), torch.from_numpy(y), x_test, y_test, CIFAR10_CLASSES


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except _ForbiddenPickle as e:
        raise DataError(
            f"{path} is not a CIFAR-10 batch: its pickle asks for {e}, which a batch of NumPy "
            f"arrays never needs, so it was not loaded; download it again from {CIFAR10_URL}"
        ) from None
    except Exception as e:
        raise DataError(
            f"cannot read CIFAR-10 batch {path} ({type(e).__name__}: {e}): "
            f"download it again from {CIFAR10_URL}"
        ) from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    row_size = math.prod(CIFAR10_SHAPE)
    if (
        not isinstance(data, np.ndarray)
        or data.ndim != 2
        or data.shape[1] != row_size
        or labels is None
        or len(labels) != len(data)
    ):
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        shape = data.shape if isinstance(data, np.ndarray) else None
        raise DataError(
            f"{path} is not a CIFAR-10 batch: expected b'data' of shape (n, {row_size}) and n "
            f"b'labels', found {found} with data shape {shape}; use the python version from "
            f"{CIFAR10_URL}"
        )
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *CIFAR10_SHAPE))
    return x, torch.as_tensor(np.asarray(labels, dtype=np.int64))


class _ForbiddenPickle(pickle.UnpicklingError):
    pass


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, limited to latin-1: Python 3 writes bytes into protocol-2 pickles as
    _codecs.encode(text, "latin1"), so re-saved CIFAR batches need it; no other codec."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise _ForbiddenPickle(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled NumPy array (and a NumPy scalar) refers to, under the module
    names NumPy 1.x (numpy.core) and 2.x (numpy._core) write."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 2
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _frombuffer
    return allowed


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """`numpy.core.numeric._frombuffer`, which protocol-5 pickles call to rebuild an array
    from its raw bytes; limited to a bytes-like buffer and a dtype without Python objects."""
    if not isinstance(buffer, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise _ForbiddenPickle(f"_frombuffer on a {type(buffer).__name__}")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        shown = dtype if isinstance(dtype, np.dtype) else type(dtype).__name__
        raise _ForbiddenPickle(f"_frombuffer with dtype {shown}")
    if order not in ("C", "F"):
        raise _ForbiddenPickle(f"_frombuffer with order {order!r}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only: any other global (os.system, builtins.eval,
    a function of the pickle's choosing) is refused before it can be called."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenPickle(f"{module}.{name}") from None


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with files / an empty one


def _load_npz(path: Path) -> tuple:
    if not path.is_file():
        raise DataError(f"npz file {str(path)!r} does not exist: pass the path of a .npz file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}): check its permissions") from None
    if magic.startswith(_NPY_MAGIC):
        raise DataError(
            f"{path} is a .npy file (a single array), not a .npz archive: "
            f"save x and y together with np.savez(path, x=X, y=y)"
        )
    if not magic.startswith(_ZIP_MAGICS):
        raise DataError(
            f"{path} is not a .npz file (a .npz is a zip archive, this file does not start "
            f"like one): save it with np.savez(path, x=X, y=y)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise DataError(
            f"cannot read {path}: {e}; save plain numeric arrays with np.savez(path, x=X, y=y)"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"cannot read {path} as .npz ({type(e).__name__}: {e}): "
            f"save it with np.savez(path, x=X, y=y)"
        ) from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{path} must hold arrays 'x' and 'y', found {sorted(arrays)}: "
            f"save it with np.savez(path, x=X, y=y)"
        )
    x_test, y_test = arrays.get("x_test"), arrays.get("y_test")
    if (x_test is None) != (y_test is None):
        raise DataError(
            f"{path} holds only one of 'x_test' and 'y_test', found {sorted(arrays)}: "
            f"save both or neither"
        )
    return arrays["x"], arrays["y"], x_test, y_test, None


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
