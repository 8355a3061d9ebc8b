"""Kinds of layers, as one table: which modules carry weights, which only pass values
through, which behave differently in train and eval mode. The init schemes, the forward-pass
recorder, the probes, the Monitor and the checks all read this table, so a layer kind is
added in one place.

Covered kinds (docs/checkup.md, "Layer kinds"): Linear and Conv1d/2d/3d; transformers'
`Conv1D` (GPT-2's, a Linear whose weight is stored (in, out)); Embedding/EmbeddingBag;
RNN/LSTM/GRU and their cells (tuple outputs: the output sequence is the layer's output);
MultiheadAttention (returns (output, weights); it runs its projections itself, so it is one
layer, not its `out_proj` child); BatchNorm/LayerNorm/GroupNorm/RMSNorm.
"""

from __future__ import annotations

import sys

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = [
    "ATTENTION",
    "DROPOUT",
    "EMBEDDING",
    "LINEAR_PASS_THROUGH",
    "MAX_POOLING",
    "NORMALIZATION",
    "PASS_THROUGH",
    "PLUMBING",
    "RECURRENT",
    "WEIGHT_LAYERS",
    "is_atomic",
    "is_feature_normalization",
    "is_parameterised",
    "is_weight_layer",
    "layer_kind",
    "layer_output",
    "layer_weights",
    "parameterised_layers",
    "run_by_parent",
    "weight_matrix",
]

# The layers whose weight the init schemes set and the checks follow through depth, with
# their weight stored (out, in, *kernel). transformers' Conv1D is one too, stored (in, out):
# see `is_weight_layer` and `weight_matrix`.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# A lookup table: one row per token id, no fan-in.
EMBEDDING = (nn.Embedding, nn.EmbeddingBag)

# Recurrent layers: their output is a tuple (output sequence, state); the output sequence
# is what the next layer reads. The cells return the new state (LSTMCell: (h, c)).
RECURRENT = (nn.RNNBase, nn.RNNCellBase)

# Attention that runs its projections itself (F.multi_head_attention_forward reads
# out_proj.weight, never calls out_proj): one layer whose children are never called.
ATTENTION = (nn.MultiheadAttention,)

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
    nn.RMSNorm,
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


def _transformers_conv1d() -> tuple[type, ...]:
    """transformers' Conv1D class if transformers is loaded (a model holding one has loaded
    it), else nothing: babysit never imports transformers itself."""
    module = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(module, "Conv1D", None)
    return (conv1d,) if isinstance(conv1d, type) else ()


def is_weight_layer(module: nn.Module) -> bool:
    """A Linear/Conv layer, or transformers' Conv1D (a Linear with its weight transposed)."""
    return isinstance(module, (*WEIGHT_LAYERS, *_transformers_conv1d()))


def is_atomic(module: nn.Module) -> bool:
    """A module with children that runs as one layer (its children are never called)."""
    return isinstance(module, ATTENTION)


def is_feature_normalization(module: nn.Module) -> bool:
    """LayerNorm or RMSNorm, torch's or a model's own (transformers' LlamaRMSNorm, T5's
    LayerNorm...): normalization over each example's features, the transformer's."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm")
    )


def run_by_parent(model: nn.Module) -> set[str]:
    """Names of the modules inside a layer that runs them itself (`is_atomic`): never called,
    so never probed and never a layer of their own."""
    inside: set[str] = set()
    for name, module in model.named_modules():
        if is_atomic(module) and name not in inside:
            inside.update(
                f"{name}.{child}" if name else child for child, _ in module.named_modules() if child
            )
    return inside


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of the kinds in this table, by name, in registration order."""
    inside = run_by_parent(model)
    return [
        (name, m)
        for name, m in model.named_modules()
        if name and name not in inside and is_parameterised(m)
    ]


def layer_kind(module: nn.Module) -> str | None:
    """The kind of a parameterised layer ("linear", "conv", "conv1d_transposed",
    "embedding", "recurrent", "attention", "normalization"), or None for any other module."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, WEIGHT_LAYERS):
        return "conv"
    if isinstance(module, _transformers_conv1d()):
        return "conv1d_transposed"
    if isinstance(module, EMBEDDING):
        return "embedding"
    if isinstance(module, RECURRENT):
        return "recurrent"
    if isinstance(module, ATTENTION):
        return "attention"
    if (isinstance(module, NORMALIZATION) or is_feature_normalization(module)) and any(
        True for _ in module.parameters(recurse=False)
    ):
        return "normalization"
    return None


def is_parameterised(module: nn.Module) -> bool:
    """One of the layer kinds babysit probes and whose updates it measures."""
    return layer_kind(module) is not None


def weight_matrix(module: nn.Module) -> Tensor | None:
    """The weight of a weight layer as (out, in, *kernel): a Conv1D's (in, out) weight is
    transposed (a view); None for any other module."""
    if isinstance(module, WEIGHT_LAYERS):
        return module.weight
    if isinstance(module, _transformers_conv1d()):
        return module.weight.t()
    return None


def layer_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters a layer's update/weight ratio is measured on, by their name in the
    module: the weight matrices of a weight layer, an embedding (its table), a recurrent layer
    (`weight_ih_l*`, `weight_hh_l*`, grouped as one ratio) or an attention layer
    (`in_proj_weight` or q/k/v_proj_weight, `out_proj.weight`); a normalization layer's gain
    and shift together. Biases of the other kinds are left out, as for Linear/Conv."""
    kind = layer_kind(module)
    if kind is None:
        return []
    if kind == "normalization":
        return list(module.named_parameters())
    return [
        (name, p)
        for name, p in module.named_parameters()
        if p.dim() >= 2 and "weight" in name.rsplit(".", 1)[-1]
    ]


def layer_output(output: object) -> Tensor | None:
    """The tensor that carries a layer's signal: the output itself; the first element of a
    tuple (an RNN's output sequence, attention's output beside its weights, LSTMCell's h);
    a PackedSequence's data. None when there is no such tensor."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output:
        output = output[0]
    if isinstance(output, PackedSequence):
        return output.data
    return output if isinstance(output, Tensor) else None
