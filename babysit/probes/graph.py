"""Roles of layers read from the autograd graph of one forward pass: which weight layers are
the projections of one attention, and which layers' outputs reach a normalization through
sums only. Module hooks cannot see either: the attention scores and the residual or
embedding sums are functional ops inside `forward`.

- **Attention.** A softmax over a matrix product (past a mask and a scale) whose operands
  come from two weight layers is an attention: walking back from the product to the first
  layer outputs finds the query and key projections, and walking forward from the softmax
  to the next product, then back along its other operand, the value projection (a fused
  scaled-dot-product kernel takes the three as its inputs). BERT's `attention.self.query`,
  `key`, `value`; Llama's `q_proj`, `k_proj`, `v_proj`. A softmax over one layer's output
  (a classifier's) or over a fused qkv projection (GPT-2's `c_attn`) has nothing to group.
- **Normalized.** Walking back from a normalization layer's input through sums and
  reshapes (and products with constants) finds the layers whose output it normalizes:
  BERT's word, position and token-type embeddings under the embedding LayerNorm, a Linear
  under a Post-LN residual sum, a conv under its BatchNorm.
"""

from __future__ import annotations

from collections.abc import Mapping, ValuesView
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

__all__ = ["GraphRoles", "RoleRecorder", "graph_roles"]

# Fused attention kernels (flash, memory-efficient, cuDNN), whose inputs are query, key and
# value; the math path of scaled_dot_product_attention and written-out attention run a
# softmax ("SafeSoftmax" for the former) between two matrix products.
_FUSED_ATTENTION_NODES = ("ScaledDotProduct", "Attention")
_PRODUCT_NODES = frozenset({"BmmBackward0", "MmBackward0"})

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
    """`attention`: an attention's name (the module holding its projections) -> the names
    of its query, key and value projections, in registration order;
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


def _graph_nodes(roots: list) -> list:
    """Every node of the autograd graph behind the nodes `roots`."""
    nodes, stack, seen = [], list(roots), set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(f for f, _ in node.next_functions)
    return nodes


def _products(start, forward: bool, consumers: dict) -> list:
    """The first matrix products (bmm/mm; a 4-D matmul is one between expands and views)
    on the paths from `start` through scale-keeping nodes only: back to the scores' q @ k^T
    (past a mask added, a 1/sqrt(d) scale), or forward to the weights' product with v (past
    dropout)."""

    def following(node) -> list:
        return list(consumers.get(node, [])) if forward else [f for f, _ in node.next_functions]

    found, seen, stack = [], set(), following(start)
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in _PRODUCT_NODES:
            found.append(node)
        elif _keeps_scale(node):
            stack.extend(following(node))
    return found


def _group_name(names: list[str]) -> str:
    """The innermost module holding all of `names` (BERT's `attention.self`), or the names
    joined by "+" when only the model holds them all."""
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common) if common else "+".join(names)


def _attention_groups(roots: list, produced: dict, layers: dict) -> dict[str, list[str]]:
    nodes = _graph_nodes(roots)
    consumers: dict = {}
    for node in nodes:
        for parent, _ in node.next_functions:
            if parent is not None:
                consumers.setdefault(parent, []).append(node)

    def weight_layers(found: set[str]) -> set[str]:
        return {n for n in found if is_weight_layer(layers[n])}

    groups: dict[str, list[str]] = {}
    for node in nodes:
        name = type(node).__name__
        if "Softmax" in name:
            scores = set().union(
                *(_layers_behind(p, produced) for p in _products(node, False, consumers))
            )
            query_key = weight_layers(scores)
            values = set().union(
                *(_layers_behind(p, produced) for p in _products(node, True, consumers))
            )
            members = query_key | (weight_layers(values) - query_key)
        elif any(word in name for word in _FUSED_ATTENTION_NODES):
            query_key = members = weight_layers(_layers_behind(node, produced))
        else:
            continue
        if len(query_key) < 2:
            continue  # a softmax over one layer's output, or a fused qkv projection
        ordered = [n for n in layers if n in members]
        groups[_group_name(ordered)] = ordered
    return groups


class RoleRecorder:
    """Hooks that record what the roles are read from while a model runs: the autograd node
    of every layer's output, the node of every normalization's input, and `roots`, the
    nodes of the model's own outputs (every tensor it returns: a `ModelOutput`'s logits and
    loss). Hooks inside a compiled graph record nothing. `roles()` reads them (`graph_roles`
    runs one forward under it; the Monitor reads the first training step's)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = dict(parameterised_layers(model))
        self.produced: dict = {}
        self.norm_inputs: list = []
        self.roots: list = []
        self.enabled = True  # False: the hooks stay (a compiled graph keeps its guards), idle
        self._handles: list = []

    def attach(self) -> RoleRecorder:
        if self._handles:
            return self
        self._handles = [m.register_forward_hook(self._record(n)) for n, m in self.layers.items()]
        self._handles += [
            m.register_forward_pre_hook(self._record_input)
            for _, m in self.model.named_modules()
            if _is_normalization(m)
        ]
        self._handles.append(self.model.register_forward_hook(self._record_root))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop the recorded nodes (and the graph they keep alive)."""
        self.produced, self.norm_inputs, self.roots = {}, [], []

    def _record(self, name: str):
        def hook(module: nn.Module, inputs: tuple, result: object) -> None:
            if torch.compiler.is_compiling() or not self.enabled:
                return
            output = layer_output(result)
            if isinstance(output, Tensor) and output.grad_fn is not None:
                self.produced[output.grad_fn] = name

        return hook

    def _record_input(self, module: nn.Module, inputs: tuple) -> None:
        if torch.compiler.is_compiling() or not self.enabled:
            return
        first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        if first is not None and first.grad_fn is not None:
            self.norm_inputs.append(first.grad_fn)

    def _record_root(self, module: nn.Module, inputs: tuple, result: object) -> None:
        if torch.compiler.is_compiling() or not self.enabled:
            return
        values = result.values() if isinstance(result, Mapping) else result
        values = values if isinstance(values, tuple | list | ValuesView) else [values]
        self.roots += [v.grad_fn for v in values if isinstance(v, Tensor) and v.grad_fn]

    def roles(self, roots: list | None = None) -> GraphRoles:
        """The roles in the graph behind `roots` (default: the recorded model outputs)."""
        roots = self.roots if roots is None else roots
        found = GraphRoles()
        if not roots:
            return found
        found.attention = _attention_groups(roots, self.produced, self.layers)
        for node in self.norm_inputs:
            if node in self.produced:
                found.normalized.add(self.produced[node])
            elif _keeps_scale(node):
                found.normalized |= _layers_behind(node, self.produced, _keeps_scale)
        return found


def graph_roles(model: nn.Module, x: Inputs, forward: Forward | None = None) -> GraphRoles:
    """Run `x` through `model` once with gradients (no backward; model, buffers, grads and
    random generators left as found) and read the attention projections and the normalized
    layers from the autograd graph. Empty roles when no parameter takes a gradient."""
    recorder = RoleRecorder(model).attach()
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:  # dropout draws from the generators: they are left as found too
        with preserved(model), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
            model.train()
            output = model_output(model, x, forward)
    finally:
        recorder.remove()
    if not isinstance(output, Tensor) or output.grad_fn is None:
        return GraphRoles()
    return recorder.roles([output.grad_fn])
