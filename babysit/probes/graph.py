"""Roles of layers read from the autograd graph of one forward pass: which weight layers are
the projections of one attention, and which layers' outputs reach a normalization through
sums only. Module hooks cannot see either: the attention scores and the residual or
embedding sums are functional ops inside `forward`.

- **Attention.** Walking back from a softmax (or a fused scaled-dot-product attention) to
  the first layer outputs on each path finds the projections the scores are computed from:
  query and key (and value, for a fused kernel). When two or more weight layers with one
  parent module are found (BERT's `attention.self.query`/`key`, Llama's `self_attn.q_proj`/
  `k_proj`), that parent is one attention, and its weight layers are its projections. A
  softmax over one layer's output (a classifier's, a combined qkv projection) is not.
- **Normalized.** Walking back from a normalization layer's input through sums and
  reshapes (and products with constants) finds the layers whose output it normalizes:
  BERT's word, position and token-type embeddings under the embedding LayerNorm, a Linear
  under a Post-LN residual sum, a conv under its BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from babysit.data.batches import Forward, Inputs, model_output
from babysit.nn.layers import (
    NORMALIZATION,
    is_feature_normalization,
    is_weight_layer,
    layer_output,
    parameterised_layers,
)
from babysit.probes.hooks import preserved

__all__ = ["GraphRoles", "graph_roles"]

# Autograd nodes that turn attention scores into weights: a softmax (torch's, or the "safe"
# one of scaled_dot_product_attention's math path), or a fused attention kernel (flash,
# memory-efficient, cuDNN), whose inputs are query, key and value.
_ATTENTION_NODES = ("Softmax", "ScaledDotProduct", "Attention")

# Autograd nodes through which a layer's output reaches a normalization with its scale
# intact: sums, reshapes, copies and dropout (a mask times a constant).
_SCALE_KEEPING_NODES = frozenset(
    {
        "AddBackward0",
        "AddBackward1",
        "SubBackward0",
        "SubBackward1",
        "ViewBackward0",
        "UnsafeViewBackward0",
        "ReshapeAliasBackward0",
        "PermuteBackward0",
        "TransposeBackward0",
        "TransposeBackward1",
        "TBackward0",
        "CloneBackward0",
        "ExpandBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "SqueezeBackward2",
        "UnsqueezeBackward0",
        "ToCopyBackward0",
        "NativeDropoutBackward0",
        "FusedDropoutBackward0",
    }
)
# Products that keep the scale when only one factor carries a gradient (dropout's mask, a
# constant); a product of two such factors (a gate) does not.
_SCALING_NODES = frozenset({"MulBackward0", "MulBackward1", "DivBackward0", "DivBackward1"})


@dataclass
class GraphRoles:
    """`attention`: attention module name -> the names of its weight layers (projections);
    `normalized`: names of the layers whose output reaches a normalization through sums."""

    attention: dict[str, list[str]] = field(default_factory=dict)
    normalized: set[str] = field(default_factory=set)


def _is_normalization(module: nn.Module) -> bool:
    return isinstance(module, NORMALIZATION) or is_feature_normalization(module)


def _keeps_scale(node) -> bool:
    name = type(node).__name__
    if name in _SCALE_KEEPING_NODES:
        return True
    if name in _SCALING_NODES:
        return sum(f is not None for f, _ in node.next_functions) <= 1
    return False


def _layers_behind(start, produced: dict, through=None) -> set[str]:
    """The layers whose output is the first layer output on a path back from `start`'s
    inputs; with `through`, only paths whose nodes all pass it."""
    found: set[str] = set()
    stack, seen = [f for f, _ in start.next_functions], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            found.add(produced[node])
        elif through is None or through(node):
            stack.extend(f for f, _ in node.next_functions)
    return found


def _graph_nodes(output: Tensor) -> list:
    """Every node of `output`'s autograd graph."""
    nodes, stack, seen = [], [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(f for f, _ in node.next_functions)
    return nodes


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _attention_groups(output: Tensor, produced: dict, layers: dict) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for node in _graph_nodes(output):
        if not any(word in type(node).__name__ for word in _ATTENTION_NODES):
            continue
        projections = {n for n in _layers_behind(node, produced) if is_weight_layer(layers[n])}
        parents = {_parent(n) for n in projections}
        if len(projections) < 2 or len(parents) != 1 or "" in parents:
            continue
        parent = parents.pop()
        groups[parent] = [
            n for n, m in layers.items() if _parent(n) == parent and is_weight_layer(m)
        ]
    return groups


def graph_roles(model: nn.Module, x: Inputs, forward: Forward | None = None) -> GraphRoles:
    """Run `x` through `model` once with gradients (no backward; model, buffers, grads and
    random generators left as found) and read the attention projections and the normalized
    layers from the autograd graph. Empty roles when no parameter takes a gradient."""
    layers = dict(parameterised_layers(model))
    produced: dict = {}
    norm_inputs: list = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, result: object) -> None:
            output = layer_output(result)
            if isinstance(output, Tensor) and output.grad_fn is not None:
                produced[output.grad_fn] = name

        return hook

    def record_input(module: nn.Module, inputs: tuple) -> None:
        first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        if first is not None and first.grad_fn is not None:
            norm_inputs.append(first.grad_fn)

    handles = [m.register_forward_hook(record(n)) for n, m in layers.items()]
    handles += [
        m.register_forward_pre_hook(record_input)
        for _, m in model.named_modules()
        if _is_normalization(m)
    ]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:  # dropout draws from the generators: they are left as found too
        with preserved(model), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
            model.train()
            output = model_output(model, x, forward)
    finally:
        for handle in handles:
            handle.remove()
    roles = GraphRoles()
    if not isinstance(output, Tensor) or output.grad_fn is None:
        return roles
    roles.attention = _attention_groups(output, produced, layers)
    for node in norm_inputs:
        if node in produced:
            roles.normalized.add(produced[node])
        elif _keeps_scale(node):
            roles.normalized |= _layers_behind(node, produced, _keeps_scale)
    return roles
