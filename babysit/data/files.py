"""Reading data files safely: the CIFAR-10 python batches (pickles, unpickled with NumPy's
globals only, so that a batch can never run code) and .npz archives (no pickle at all).
Each reader returns raw arrays (x, y, x_test, y_test, classes or None) for `load_data`."""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from babysit.errors import DataError

# The CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar.html): five training
# batches of 10,000 images and one test batch, each row 3072 bytes = 1024 R, 1024 G, 1024 B
# of a 32x32 image in row-major order.
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_CLASSES = 10
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


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
