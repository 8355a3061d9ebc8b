"""Preprocessing transforms, fitted on the training data only, in the manner of scikit-learn.

CS231n Lecture 6: zero-centre the data, by subtracting the mean image (AlexNet) or the
per-channel mean (VGG); normalising, PCA and whitening are common in classical machine
learning and rarer for images. Compute the statistics on train and apply the same transform
to val and test. `fit(X)` returns self; learnt state ends in an underscore; `transform`,
`inverse_transform`, `fit_transform`, `state_dict`, `load_state_dict`.

Inputs are tensors or NumPy arrays shaped (N, ...); outputs have the input's type and, for
floating inputs, its dtype (integer inputs such as uint8 images come back as float32). `fit`
also takes an iterable of batches (a DataLoader yielding tensors or (x, y) tuples) and fits
in one streaming pass, with memory O(D^2) for D features, not O(N * D).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from babysit._validation import check_scalar
from babysit.data.moments import _Moments
from babysit.errors import UsageError

__all__ = [
    "CONSTANT_FEATURE_EPSILONS",
    "WHITEN_EPS",
    "PCA",
    "MeanImage",
    "NotFittedError",
    "PerChannelMean",
    "Standardize",
    "Transform",
    "Whiten",
    "TRANSFORMS",
    "by_name",
    "fit_apply",
]

# A feature counts as constant when its std is below the rounding of its own mean in the
# input's dtype, 10 machine epsilons of it (scikit-learn's `_handle_zeros_in_scale` bound): the
# data cannot resolve a smaller spread. Standardize leaves such a feature unscaled (std_ = 1), as
# StandardScaler does, rather than dividing by a tiny floor: a pixel that is always 0 in
# train (digits has some) would otherwise blow up by 1/floor wherever it is not 0 in val.
CONSTANT_FEATURE_EPSILONS = 10

# Added to each eigenvalue before whitening divides by its square root, so directions of
# (near-)zero variance are not blown up: the CS231n notes' `Xrot / np.sqrt(S + 1e-5)`. It is
# in the data's squared units, negligible for raw pixels (variances ~1e3) and for
# standardised data (~1); raise it to damp the small-variance, mostly-noise directions.
WHITEN_EPS = 1e-5

# `fit` on one array works through it in chunks of this many rows, so that its temporaries
# stay O(chunk * D) and the centred copy of the whole array is never made.
_FIT_CHUNK_ROWS = 4096

T = TypeVar("T", bound="Transform")
ArrayLike = Tensor | np.ndarray


class NotFittedError(UsageError):
    """A transform used before `fit`."""


class Transform:
    """Base class: fit on train, then transform train, val and test alike."""

    _moments: ClassVar[str | None] = None  # the second moments fit needs
    _min_ndim: ClassVar[int] = 2
    _min_samples: ClassVar[int] = 1
    _state: ClassVar[tuple[str, ...]] = ()  # learnt tensors saved by state_dict
    _inverse_takes_inputs: ClassVar[bool] = True  # False where inverse_transform takes scores

    # --- what each transform defines -------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        """The constructor's arguments, read back from the attributes of the same names
        (scikit-learn's `get_params` convention): what state_dict saves and repr shows."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        parameters = list(inspect.signature(type(self).__init__).parameters.values())
        return {p.name: getattr(self, p.name) for p in parameters[1:] if p.kind in named}

    def _rows(self, x: Tensor) -> Tensor:
        """The (rows, features) matrix whose statistics are learnt."""
        return x.flatten(1)

    def _features(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The part of an input's shape that must match between fit and transform."""
        return tuple(shape[1:])

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        raise AssertionError  # each transform overrides it

    def _derive(self) -> None:
        """Compute what follows from the learnt state (after fit and load_state_dict)."""

    def _forward(self, x: Tensor) -> Tensor:
        raise AssertionError

    def _backward(self, x: Tensor) -> Tensor:
        raise AssertionError

    # --- the public API --------------------------------------------------------------------

    def fit(self: T, X: ArrayLike | Iterable) -> T:
        """Learn the statistics of X: an (N, ...) tensor or array, or an iterable of batches."""
        moments = _Moments(self._moments)
        features = None
        n_samples = 0
        for batch in _batches(X):
            x = _tensor(batch, self)
            self._check_ndim(x)
            if len(x) == 0:
                continue
            x = x if x.is_floating_point() else x.to(torch.float32)
            if features is None:
                features = self._features(tuple(x.shape))
            elif self._features(tuple(x.shape)) != features:
                raise UsageError(
                    f"{type(self).__name__}.fit got batches of different shapes: "
                    f"{features} then {self._features(tuple(x.shape))}: every batch must hold "
                    f"examples of the same shape"
                )
            moments.update(self._rows(x))
            n_samples += len(x)
        if n_samples < self._min_samples:
            raise UsageError(
                f"{type(self).__name__}.fit needs at least {self._min_samples} examples, got "
                f"{n_samples}: fit on the training set"
            )
        if not bool(torch.isfinite(moments.total).all()):  # NaN/inf reach the sum: no extra pass
            raise UsageError(
                f"{type(self).__name__}.fit got NaN or inf in its input: drop or impute those "
                f"examples before fitting (load_data(validate=True) finds them)"
            )
        feature_shape = tuple(x.shape[1:])
        learnt = self._learn(moments, feature_shape)  # may raise: set nothing before it returns
        self.n_samples_seen_ = n_samples
        self.feature_shape_ = feature_shape
        for name, value in learnt.items():
            setattr(self, name, value)
        self._derive()
        return self

    def transform(self, X: ArrayLike) -> ArrayLike:
        """Apply the fitted transform; X keeps its type, and its dtype when floating."""
        x, restore = self._input(X, "transform", check_features=True)
        return restore(self._forward(x))

    def inverse_transform(self, X: ArrayLike) -> ArrayLike:
        """Undo `transform` (exactly, except for the components PCA dropped)."""
        x, restore = self._input(X, "inverse_transform", self._inverse_takes_inputs)
        return restore(self._backward(x))

    def fit_transform(self, X: ArrayLike) -> ArrayLike:
        """fit(X), then transform(X)."""
        if not isinstance(X, (Tensor, np.ndarray)):
            raise UsageError(
                f"{type(self).__name__}.fit_transform needs one tensor or array, got "
                f"{type(X).__name__}: for batches call fit(batches), then transform each batch"
            )
        return self.fit(X).transform(X)

    def state_dict(self) -> dict[str, Any]:
        """Config and learnt tensors as a plain dict, for torch.save (weights_only loads it)."""
        self._check_fitted("state_dict")
        return {
            "transform": type(self).__name__,
            "config": self._config(),
            "n_samples_seen": self.n_samples_seen_,
            "feature_shape": list(self.feature_shape_),
            "state": {name: getattr(self, name) for name in self._state},
        }

    def load_state_dict(self: T, state: dict[str, Any]) -> T:
        """Restore a state_dict, config included, into this object; returns self."""
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("transform") != name:
            found = state.get("transform") if isinstance(state, dict) else type(state).__name__
            raise UsageError(
                f"{name}.load_state_dict got the state of {found!r}: load it into a {found}"
            )
        missing = [k for k in self._state if k not in state.get("state", {})]
        if missing:
            raise UsageError(f"{name} state_dict lacks {missing}: save it with state_dict()")
        self.__init__(**state["config"])
        self.n_samples_seen_ = int(state["n_samples_seen"])
        self.feature_shape_ = tuple(int(d) for d in state["feature_shape"])
        for key in self._state:
            setattr(self, key, state["state"][key])
        self._derive()
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    # --- boundary checks -------------------------------------------------------------------

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "n_samples_seen_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted, so it cannot {method}: call fit(train) first"
            )

    def _check_ndim(self, x: Tensor) -> None:
        if x.dim() < self._min_ndim:
            shape = "(N, C, ...)" if self._min_ndim > 2 else "(N, features...)"
            raise UsageError(
                f"{type(self).__name__} needs inputs shaped {shape}, got shape "
                f"{tuple(x.shape)}: add the batch dimension"
                + (" (use MeanImage for flat features)" if self._min_ndim > 2 else "")
            )

    def _check_features(self, x: Tensor) -> None:
        fitted = self._features((0, *self.feature_shape_))
        given = self._features(tuple(x.shape))
        if given != fitted:
            raise UsageError(
                f"{type(self).__name__} was fitted on examples of shape {self.feature_shape_} "
                f"({math.prod(fitted)} features), got shape {tuple(x.shape[1:])} "
                f"({math.prod(given)} features): transform data shaped like the data it was "
                f"fitted on"
            )

    def _input(
        self, X: ArrayLike, method: str, check_features: bool
    ) -> tuple[Tensor, Callable[[Tensor], ArrayLike]]:
        self._check_fitted(method)
        x = _tensor(X, self)
        self._check_ndim(x)
        if check_features:
            self._check_features(x)
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32

        def restore(y: Tensor) -> ArrayLike:
            y = y.to(out_dtype)
            return y.numpy() if isinstance(X, np.ndarray) else y

        return x.to(compute), restore

    def _param(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)


def _tensor(X: object, transform: Transform) -> Tensor:
    if isinstance(X, Tensor):
        return X
    if isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
        with warnings.catch_warnings():  # read-only arrays are fine: we never write to them
            warnings.simplefilter("ignore", UserWarning)
            return torch.as_tensor(X if X.dtype.isnative else X.astype(X.dtype.newbyteorder("=")))
    given = getattr(X, "dtype", type(X).__name__)
    raise UsageError(
        f"{type(transform).__name__} needs a numeric tensor or NumPy array, got {given}: "
        f"convert it with torch.as_tensor(...)"
    )


def _batches(X: object) -> Iterator[object]:
    """Chunks of one array, or the inputs of each batch of an iterable (x or (x, y, ...))."""
    if isinstance(X, TensorDataset):
        X = X.tensors[0]
    if isinstance(X, (Tensor, np.ndarray)):
        for start in range(0, max(len(X), 1), _FIT_CHUNK_ROWS):
            yield X[start : start + _FIT_CHUNK_ROWS]
        return
    if not isinstance(X, Iterable) or isinstance(X, (str, bytes, dict)):
        raise UsageError(
            f"fit needs a tensor, an array or an iterable of batches, got {type(X).__name__}: "
            f"pass the training inputs or a DataLoader over them"
        )
    for batch in X:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


class MeanImage(Transform):
    """Subtract the mean of each input feature (pixel and channel): AlexNet's mean image."""

    _state = ("mean_",)

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"mean_": moments.mean().reshape(feature_shape)}

    def _forward(self, x: Tensor) -> Tensor:
        return x - self._param("mean_", x)

    def _backward(self, x: Tensor) -> Tensor:
        return x + self._param("mean_", x)


class PerChannelMean(Transform):
    """Subtract one mean per channel, over all examples and positions: VGG's choice.

    Needs channels-first inputs (N, C, ...); the spatial size may differ from fit's.
    """

    _min_ndim = 3
    _state = ("mean_",)

    def _rows(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1).reshape(-1, x.shape[1])

    def _features(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[1],)

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"mean_": moments.mean()}

    def _broadcast(self, x: Tensor) -> Tensor:
        return self._param("mean_", x).reshape(-1, *([1] * (x.dim() - 2)))

    def _forward(self, x: Tensor) -> Tensor:
        return x - self._broadcast(x)

    def _backward(self, x: Tensor) -> Tensor:
        return x + self._broadcast(x)


class Standardize(Transform):
    """Per feature (x - mean) / std, the population std as in sklearn's StandardScaler.

    Constant features (CONSTANT_FEATURE_EPSILONS) are only centred: their std_ is 1.
    """

    _moments = "diag"
    _state = ("mean_", "std_")

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        mean = moments.mean()
        std = moments.variance(ddof=0).sqrt()
        rounding = CONSTANT_FEATURE_EPSILONS * torch.finfo(moments.dtype).eps * mean.abs()
        std = torch.where(std <= rounding, torch.ones_like(std), std)
        return {"mean_": mean.reshape(feature_shape), "std_": std.reshape(feature_shape)}

    def _forward(self, x: Tensor) -> Tensor:
        return (x - self._param("mean_", x)) / self._param("std_", x)

    def _backward(self, x: Tensor) -> Tensor:
        return x * self._param("std_", x) + self._param("mean_", x)


def _eigen(moments: _Moments) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, eigenvalues descending, eigenvectors as rows) of the sample covariance (n - 1).

    Each eigenvector's largest-magnitude entry is made positive, scikit-learn's `svd_flip`
    convention, so the result does not depend on the solver's signs.
    """
    values, vectors = torch.linalg.eigh(moments.covariance(ddof=1))
    values, rows = values.flip(0).clamp_min(0), vectors.flip(1).T.contiguous()
    del vectors
    negative = -rows.amin(dim=1) > rows.amax(dim=1)  # the largest |entry| is negative
    rows.mul_(1 - 2 * negative.to(rows.dtype)[:, None])
    return moments.mean(), values, rows


class PCA(Transform):
    """Project the centred data on its top principal components: (N, ...) -> (N, k).

    `n_components`: an int k, a fraction of variance to keep in (0, 1), or None for
    min(N, D). With `whiten=True` each component is divided by its std, as scikit-learn's
    PCA(whiten=True) does (stds floored at float64's epsilon). Variances use N - 1.
    """

    _moments = "full"
    _min_samples = 2
    _state = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_")
    _inverse_takes_inputs = False

    def __init__(self, n_components: int | float | None = None, whiten: bool = False):
        valid_int = isinstance(n_components, int) and not isinstance(n_components, bool)
        if not (
            n_components is None
            or (valid_int and n_components >= 1)
            or (isinstance(n_components, float) and 0 < n_components < 1)
        ):
            raise UsageError(
                f"PCA n_components must be an int >= 1, a variance fraction in (0, 1) or None, "
                f"got {n_components!r}: e.g. PCA(n_components=50) or PCA(0.99)"
            )
        self.n_components = n_components
        self.whiten = bool(whiten)

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        mean, values, rows = _eigen(moments)
        largest = min(moments.count, len(values))
        ratio = values / values.sum().clamp_min(torch.finfo(values.dtype).tiny)
        if self.n_components is None:
            k = largest
        elif isinstance(self.n_components, float):
            k = int(torch.searchsorted(ratio.cumsum(0), self.n_components, right=True)) + 1
            k = min(k, largest)
        elif self.n_components > largest:
            raise UsageError(
                f"PCA n_components={self.n_components} is more than min(n_samples, n_features)"
                f"={largest}: pick at most {largest}"
            )
        else:
            k = self.n_components
        return {
            "mean_": mean,
            "components_": rows[:k].contiguous(),
            "explained_variance_": values[:k],
            "explained_variance_ratio_": ratio[:k],
        }

    def _derive(self) -> None:
        self.n_components_ = len(self.components_)
        scale = self.explained_variance_.sqrt()
        self._scale = scale.clamp_min(torch.finfo(scale.dtype).eps)

    def _forward(self, x: Tensor) -> Tensor:
        scores = (x.flatten(1) - self._param("mean_", x)) @ self._param("components_", x).T
        return scores / self._param("_scale", x) if self.whiten else scores

    def _backward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.n_components_:
            raise UsageError(
                f"PCA.inverse_transform needs scores shaped (N, {self.n_components_}), got "
                f"{tuple(z.shape)}: pass what transform returned"
            )
        if self.whiten:
            z = z * self._param("_scale", z)
        x = z @ self._param("components_", z) + self._param("mean_", z)
        return x.reshape(-1, *self.feature_shape_)


class Whiten(Transform):
    """Decorrelate the features and give each unit variance: cov(transform(X)) ~ I.

    With U, lambda the eigenvectors and eigenvalues of the covariance (N - 1):
    kind="pca": z = diag(1 / sqrt(lambda + eps)) U^T (x - mu), shaped (N, D), components in
    order of variance; kind="zca": U diag(1 / sqrt(lambda + eps)) U^T (x - mu) (Bell &
    Sejnowski 1997), the whitening closest to the input in mean squared distance (Kessy, Lewin
    & Strimmer 2018), which keeps its shape. `eps` (WHITEN_EPS, in the data's squared units)
    keeps near-zero-variance directions from blowing up. For a reduced PCA whitening use
    PCA(n_components=k, whiten=True).
    """

    _moments = "full"
    _min_samples = 2
    _state = ("mean_", "components_", "explained_variance_")
    _inverse_takes_inputs = False

    def __init__(self, kind: str = "zca", eps: float = WHITEN_EPS):
        if kind not in ("pca", "zca"):
            raise UsageError(f"Whiten kind must be 'pca' or 'zca', got {kind!r}")
        check_scalar(eps, "Whiten eps", float, min=0, fix="e.g. eps=1e-5")
        self.kind = kind
        self.eps = float(eps)

    def _learn(self, moments: _Moments, feature_shape: tuple[int, ...]) -> dict[str, Tensor]:
        mean, values, rows = _eigen(moments)
        return {"mean_": mean, "components_": rows, "explained_variance_": values}

    def _derive(self) -> None:
        scale = (self.explained_variance_ + self.eps).sqrt()
        self._scale = scale.clamp_min(torch.finfo(scale.dtype).eps)
        rows = self.components_
        if self.kind == "zca":
            self.whitening_matrix_ = (rows.T / self._scale) @ rows
        else:
            self.whitening_matrix_ = rows.T / self._scale

    def _forward(self, x: Tensor) -> Tensor:
        z = (x.flatten(1) - self._param("mean_", x)) @ self._param("whitening_matrix_", x)
        return z.reshape(x.shape) if self.kind == "zca" else z

    def _backward(self, z: Tensor) -> Tensor:
        features = math.prod(self.feature_shape_)
        if z.flatten(1).shape[1] != features or (self.kind == "pca" and z.dim() != 2):
            expected = self.feature_shape_ if self.kind == "zca" else (features,)
            raise UsageError(
                f"Whiten.inverse_transform needs inputs shaped (N, *{expected}), got "
                f"{tuple(z.shape)}: pass what transform returned"
            )
        rows = self._param("components_", z)
        coloring = rows * self._param("_scale", z)[:, None]  # the inverse of whitening_matrix_
        if self.kind == "zca":
            coloring = rows.T @ coloring
        x = z.flatten(1) @ coloring + self._param("mean_", z)
        return x.reshape(-1, *self.feature_shape_)


TRANSFORMS: dict[str, Callable[[], Transform]] = {
    "standardize": Standardize,
    "mean_image": MeanImage,
    "per_channel_mean": PerChannelMean,
    "zca": lambda: Whiten(kind="zca"),
    "pca": lambda: Whiten(kind="pca"),
}
"""Transform by name, as the CLI (`--preprocess`) and search configs (`preprocess = ...`) say
it; `pca` is PCA whitening with all components."""


def by_name(name: str) -> Transform:
    """A new, unfitted transform by its name in TRANSFORMS."""
    if name not in TRANSFORMS:
        raise UsageError(f"unknown preprocessing {name!r}; choose one of {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]()


def fit_apply(
    name: str | None, train: TensorDataset, *others: TensorDataset | None
) -> tuple[TensorDataset | None, ...]:
    """Fit the named transform on the training inputs only and apply it to `train` and to each
    of `others` (None stays None): the lecture's rule, statistics from the training set. With
    name None, the data sets come back as they are."""
    if name is None:
        return (train, *others)
    transform = by_name(name).fit(train.tensors[0])
    return tuple(
        None if ds is None else TensorDataset(transform.transform(ds.tensors[0]), ds.tensors[1])
        for ds in (train, *others)
    )
