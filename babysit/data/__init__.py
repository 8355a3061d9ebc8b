"""Data sets by name, split and validated (`load_data`), and preprocessing transforms fitted on
train (`MeanImage`, `PerChannelMean`, `Standardize`, `PCA`, `Whiten`). See docs/data.md."""

from babysit.data.datasets import Splits, as_tensors, load_data
from babysit.data.preprocess import (
    PCA,
    MeanImage,
    NotFittedError,
    PerChannelMean,
    Standardize,
    Transform,
    Whiten,
)

__all__ = [
    "PCA",
    "MeanImage",
    "NotFittedError",
    "PerChannelMean",
    "Splits",
    "Standardize",
    "Transform",
    "Whiten",
    "as_tensors",
    "load_data",
]
