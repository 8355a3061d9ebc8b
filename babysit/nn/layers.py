"""Kinds of layers, as one table: which modules carry weights, which only pass values
through, which behave differently in train and eval mode. The init schemes, the forward-pass
recorder and the checks all read these tuples, so a layer kind is added in one place."""

from __future__ import annotations

from torch import nn

__all__ = [
    "DROPOUT",
    "LINEAR_PASS_THROUGH",
    "MAX_POOLING",
    "NORMALIZATION",
    "PASS_THROUGH",
    "PLUMBING",
    "WEIGHT_LAYERS",
]

# The layers whose weight the init schemes set and the checks follow through depth.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Reshaping only: the values are the same numbers.
PLUMBING = (nn.Identity, nn.Flatten, nn.Unflatten)

# Zeroing random units in train mode, the identity in eval mode.
DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

NORMALIZATION = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)

_AVERAGE_POOLING = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
MAX_POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)

# Affine maps (or plumbing): a weight layer before and one after them compose to a single
# linear map. BatchNorm counts: at inference it is a per-unit affine map.
LINEAR_PASS_THROUGH = (*PLUMBING, *DROPOUT, *_AVERAGE_POOLING, nn.modules.batchnorm._BatchNorm)

# Modules between a weight layer and its activation that do not change which activation it
# feeds or what its output means (Linear -> BatchNorm -> ReLU, ReLU -> Dropout -> Linear).
PASS_THROUGH = (*LINEAR_PASS_THROUGH, *NORMALIZATION, *MAX_POOLING)
