"""Any batch, any output: examples whose inputs are a tensor, a tuple or a dict, and models
whose output is a tensor, a tuple or a dict (Hugging Face's `ModelOutput`).

An example is `(inputs, targets)`. `inputs` is a tensor (features, pixels or integer token
ids), a tuple of them (`model(*inputs)`), or a dict of them (`model(**inputs)`, Hugging Face
style `input_ids` / `attention_mask`). `targets` hold one value per example (a class, a
regression target) or one per position (a token, a pixel's class). These pure functions
stack, index, move and feed such batches, so that every check reads data one way. See
docs/data.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from babysit.errors import UsageError

__all__ = [
    "OUTPUT_KEY",
    "TARGET_KEYS",
    "Forward",
    "Inputs",
    "batch_size",
    "call_model",
    "collate",
    "concat",
    "describe",
    "finite_examples",
    "in_memory",
    "integer_inputs",
    "leaves",
    "main_input",
    "model_output",
    "numel",
    "read_output",
    "sample",
    "select",
    "split_item",
    "stack",
    "to_device",
    "to_tensor",
]

Inputs = Tensor | tuple | Mapping[str, Any]
"""A batch's inputs: a tensor, a tuple of inputs, or a dict of named inputs (nested alike)."""

Forward = Callable[[nn.Module, Any], Tensor]
"""`forward(model, inputs) -> scores`: how to call a model whose call or output differs."""

# The output entry that holds the scores, in a dict or a transformers `ModelOutput`.
OUTPUT_KEY = "logits"
# The entries of a dict item that are its targets, not its inputs (Hugging Face datasets put
# the labels in the same dict as `input_ids`; the model's own loss reads "labels").
TARGET_KEYS = ("labels", "label")
# The entries of a dict of inputs that carry the data itself, most telling first; the others
# (attention_mask, token_type_ids, position_ids) describe it.
MAIN_INPUT_KEYS = ("input_ids", "pixel_values", "input_values", "inputs_embeds", "x", "input")


# --- tensors and structures -------------------------------------------------------------


def to_tensor(value: object) -> Tensor:
    """A tensor from a tensor, a NumPy array, a number or a list of numbers; dtypes kept
    (integer ids stay integer). Anything else (strings, objects) is a UsageError."""
    if isinstance(value, Tensor):
        return value
    with warnings.catch_warnings():  # read-only arrays: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype == object or array.dtype.kind in "USV":
            raise UsageError(
                f"cannot make a tensor of {type(value).__name__} {value!r:.60}: inputs and "
                f"targets must be numbers, arrays or tensors (or tuples/dicts of them)"
            )
        return torch.as_tensor(array)


def _is_structure(value: object) -> bool:
    """A tuple or dict of inputs (or a list of tensors), as opposed to one array of numbers."""
    if isinstance(value, Mapping):
        return True
    if isinstance(value, tuple):
        return True
    if isinstance(value, list):
        return any(isinstance(v, (Tensor, np.ndarray, Mapping, tuple)) for v in value)
    return False


def leaves(inputs: Inputs) -> list[Tensor]:
    """Every tensor in `inputs`, in order (dict values in insertion order)."""
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [t for v in inputs.values() for t in leaves(v)]
    if isinstance(inputs, (tuple, list)):
        return [t for v in inputs for t in leaves(v)]
    return []


def _map(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: _map(v, fn) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(_map(v, fn) for v in inputs)
    return inputs  # None and other non-tensor entries pass through (e.g. a flag)


def stack(values: Sequence[object]) -> Inputs:
    """Stack per-example values into one batch: tensors, arrays and numbers into a tensor;
    tuples (and lists of tensors) entry by entry; dicts key by key. Raises a UsageError that
    names the first entry that differs in shape or kind."""
    if len(values) == 0:
        raise UsageError("nothing to stack: pass at least one example")
    first = values[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for i, v in enumerate(values):
            if not isinstance(v, Mapping) or list(v) != keys:
                found = list(v) if isinstance(v, Mapping) else type(v).__name__
                raise UsageError(
                    f"example {i} has inputs {found}, example 0 has {keys}: every example "
                    f"must have the same keys"
                )
        return {k: stack([v[k] for v in values]) for k in keys}
    if _is_structure(first):
        width = len(first)  # type: ignore[arg-type]
        for i, v in enumerate(values):
            if not _is_structure(v) or len(v) != width:  # type: ignore[arg-type]
                raise UsageError(
                    f"example {i} is {type(v).__name__} {v!r:.40}, example 0 a {width}-tuple: "
                    f"every example must have inputs of the same structure"
                )
        return tuple(stack([v[j] for v in values]) for j in range(width))  # type: ignore[index]
    tensors = [to_tensor(v) for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        odd = next(i for i, t in enumerate(tensors) if tuple(t.shape) != tuple(tensors[0].shape))
        raise UsageError(
            f"cannot stack examples of different shapes: example 0 is {tuple(tensors[0].shape)}, "
            f"example {odd} is {tuple(tensors[odd].shape)}: pad or crop them to one shape "
            f"(e.g. pad token ids to a fixed length and pass an attention_mask)"
        )
    return torch.stack(tensors)


def split_item(item: object, index: int = 0) -> tuple[object, object]:
    """(inputs, targets) of one example (or of a DataLoader's batch): an `(inputs, targets)`
    pair; three or more tensors, every one but the last an input (as in a TensorDataset); or
    a dict holding its targets under "labels"/"label" (the Hugging Face layout)."""
    if isinstance(item, Mapping):
        key = next((k for k in TARGET_KEYS if k in item), None)
        if key is None:
            raise UsageError(
                f"example {index} is a dict with keys {list(item)} and no 'labels': return "
                f"(inputs, targets) pairs, or put the targets under 'labels'"
            )
        return {k: v for k, v in item.items() if k != key}, item[key]
    if isinstance(item, (tuple, list)) and len(item) > 2 and all(
        isinstance(v, Tensor) for v in item
    ):
        # As a TensorDataset's tensors: every one but the last is an input, model(*inputs).
        return tuple(item[:-1]), item[-1]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise UsageError(
        f"example {index} is {type(item).__name__} {item!r:.40}, not an (inputs, targets) pair: "
        f"make __getitem__ return (input, target)"
    )


def collate(items: Sequence[object]) -> tuple[Inputs, Tensor]:
    """(inputs, targets) batch from a list of examples (see `split_item`); dict and tuple
    inputs are stacked entry by entry, so BERT-style `({"input_ids", "attention_mask"},
    label)` items batch like images."""
    pairs = [split_item(item, i) for i, item in enumerate(items)]
    inputs = stack([p[0] for p in pairs])
    targets = stack([p[1] for p in pairs])
    if not isinstance(targets, Tensor):
        raise UsageError(
            f"targets must be numbers or arrays, got {type(pairs[0][1]).__name__}: return one "
            f"target per example (a class, a value) or per position (a token, a pixel)"
        )
    return inputs, targets


def concat(batches: Sequence[Inputs]) -> Inputs:
    """Concatenate batches of the same structure along the first dimension."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat(list(batches))  # type: ignore[arg-type]
    if isinstance(first, Mapping):
        return {k: concat([b[k] for b in batches]) for k in first}  # type: ignore[index]
    return tuple(concat([b[j] for b in batches]) for j in range(len(first)))  # type: ignore


def batch_size(inputs: Inputs) -> int:
    """The number of examples: the first dimension, which every tensor in `inputs` shares."""
    tensors = [t for t in leaves(inputs) if t.dim() > 0]
    if not tensors:
        raise UsageError(
            "the inputs hold no tensor with a batch dimension: pass inputs shaped (N, ...)"
        )
    sizes = {len(t) for t in tensors}
    if len(sizes) > 1:
        raise UsageError(
            f"the inputs disagree on the number of examples ({sorted(sizes)}): every input "
            f"tensor must be shaped (N, ...) with the same N"
        )
    return sizes.pop()


def select(inputs: Inputs, index: Tensor | slice | Sequence[int]) -> Inputs:
    """The examples at `index` (a slice, indices or a boolean mask), in every tensor."""
    if not isinstance(index, (slice, Tensor)):
        index = torch.as_tensor(list(index), dtype=torch.long)
    return _map(inputs, lambda t: t[index] if t.dim() > 0 else t)


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """`inputs` with every tensor moved to `device` (dtypes kept)."""
    return _map(inputs, lambda t: t.to(device))


def integer_inputs(inputs: Inputs) -> bool:
    """Whether the data the model reads is integer (token ids, categories): such inputs are
    indices, never standardized nor judged for centring. Judged on `main_input`."""
    main = main_input(inputs)
    return main is not None and not (main.is_floating_point() or main.is_complex())


def main_input(inputs: Inputs) -> Tensor | None:
    """The tensor that carries the data: the tensor itself; a tuple's first; a dict's
    `input_ids` / `pixel_values` / ... (MAIN_INPUT_KEYS), else its first tensor. The data
    audit judges this one, not a mask or the position ids."""
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, Mapping):
        for key in MAIN_INPUT_KEYS:
            if isinstance(inputs.get(key), Tensor):
                return inputs[key]
    found = leaves(inputs)
    return found[0] if found else None


def finite_examples(inputs: Inputs) -> Tensor | None:
    """A boolean mask of the examples whose data (`main_input`) is finite everywhere; None
    when that data is not floating point (integer ids are always finite)."""
    main = main_input(inputs)
    if main is None or not main.is_floating_point() or main.dim() == 0:
        return None
    return torch.isfinite(main.reshape(len(main), -1)).all(dim=1)


# --- reading examples from a data set ---------------------------------------------------


def in_memory(data: object) -> tuple[Inputs, Tensor] | None:
    """(inputs, targets) when `data` is an in-memory pair (inputs a tensor, an array, a tuple
    or a dict of them) or a TensorDataset, else None (a Dataset of examples, a DataLoader)."""
    if isinstance(data, TensorDataset):
        tensors = data.tensors
        if len(tensors) < 2:
            raise UsageError(
                f"TensorDataset holds {len(tensors)} tensor(s), expected (inputs, targets): "
                f"build it as TensorDataset(X, y)"
            )
        # More than two: every tensor but the last is an input, model(*inputs).
        return (tensors[0] if len(tensors) == 2 else tuple(tensors[:-1])), tensors[-1]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(y, (Tensor, np.ndarray)) and (
            isinstance(x, (Tensor, np.ndarray)) or _is_structure(x)
        ):
            return _map_arrays(x), to_tensor(y)
    return None


def _map_arrays(inputs: object) -> Inputs:
    """`inputs` with every array (or list of numbers) made a tensor, structure kept."""
    if isinstance(inputs, Mapping):
        return {k: _map_arrays(v) for k, v in inputs.items()}
    if _is_structure(inputs):
        return tuple(_map_arrays(v) for v in inputs)  # type: ignore[union-attr]
    return to_tensor(inputs)


def _check_lengths(inputs: Inputs, targets: Tensor, what: str) -> None:
    n = batch_size(inputs)
    if targets.dim() == 0 or len(targets) != n:
        raise UsageError(
            f"{what} has {n} inputs but targets of shape {tuple(targets.shape)}: pass one "
            f"target per example, shaped (N,) or (N, ...) for per-position targets"
        )


def sample(
    data: object, limit: int | None = None, seed: int = 0
) -> tuple[Inputs, Tensor, Tensor | None]:
    """(inputs, targets, index): at most `limit` examples of `data`, drawn with a permutation
    seeded by `seed` (all of them, in order, when `limit` is None). `index` holds the drawn
    examples' positions in `data`, or None for a DataLoader or an iterable data set, whose
    first batches are taken as they come.

    `data` is a TensorDataset (two tensors: inputs, targets; more: every one but the last is
    an input), an `(inputs, targets)` pair (inputs a tensor, array, tuple or dict), a
    map-style Dataset of examples (see `split_item`), a DataLoader or an IterableDataset.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of examples or None, got {limit}")
    pair = in_memory(data)
    if pair is not None:
        inputs, targets = pair
        _check_lengths(inputs, targets, "the data")
        n = len(targets)
        if n == 0:
            raise UsageError("the data set is empty: pass at least one (inputs, target) example")
        if limit is None:
            return inputs, targets, torch.arange(n)
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
        return select(inputs, index), targets[index], index
    if isinstance(data, DataLoader):
        return (*_from_batches(iter(data), limit), None)
    if isinstance(data, IterableDataset) or (
        isinstance(data, Dataset) and not hasattr(data, "__len__")
    ):
        items = []
        for item in data:
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
        if not items:
            raise UsageError("the data set is empty: pass at least one (inputs, target) example")
        inputs, targets = collate(items)
        return inputs, targets, None
    if isinstance(data, (Dataset, Sequence)) and not isinstance(data, (str, bytes)):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise UsageError("the data set is empty: pass at least one (inputs, target) example")
        if limit is None:
            index = torch.arange(n)
        else:
            index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
        inputs, targets = collate([data[i] for i in index.tolist()])  # type: ignore[index]
        _check_lengths(inputs, targets, "the data")
        return inputs, targets, index
    raise UsageError(
        f"cannot read examples from a {type(data).__name__}: pass a Dataset or DataLoader of "
        f"(inputs, target) examples, or an (inputs, targets) pair of tensors"
    )


def _from_batches(batches, limit: int | None) -> tuple[Inputs, Tensor]:
    inputs, targets, count = [], [], 0
    for i, batch in enumerate(batches):
        x, y = split_item(batch, i)
        x = _map_arrays(x)
        y = to_tensor(y)
        _check_lengths(x, y, f"batch {i}")
        inputs.append(x)
        targets.append(y)
        count += len(y)
        if limit is not None and count >= limit:
            break
    if not targets:
        raise UsageError("the DataLoader yields no batch: pass at least one example")
    x, y = concat(inputs), torch.cat(targets)
    if limit is not None and count > limit:
        x, y = select(x, slice(0, limit)), y[:limit]
    return x, y


# --- calling the model and reading its output -------------------------------------------


def call_model(model: nn.Module, inputs: Inputs) -> object:
    """`model(x)` for a tensor, `model(*x)` for a tuple, `model(**x)` for a dict."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def read_output(output: object) -> Tensor:
    """The scores in a model's output: a tensor as is; a tuple's or list's first element (an
    RNN's `(output, state)`); a dict's or `ModelOutput`'s `logits`."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):  # transformers' ModelOutput is an OrderedDict
        scores = output.get(OUTPUT_KEY)
        if isinstance(scores, Tensor):
            return scores
        raise UsageError(
            f"the model returned a {type(output).__name__} with {list(output)} and no "
            f"'{OUTPUT_KEY}': pass forward=lambda model, x: ... that returns the scores"
        )
    if isinstance(output, (tuple, list)) and output:
        return read_output(output[0])
    raise UsageError(
        f"the model returned {type(output).__name__}, not a tensor, tuple or dict of scores: "
        f"pass forward=lambda model, x: ... that returns the scores"
    )


def model_output(model: nn.Module, inputs: Inputs, forward: Forward | None = None) -> Tensor:
    """The model's scores on `inputs`: `forward(model, inputs)` when given, else
    `read_output(call_model(model, inputs))`."""
    if forward is None:
        return read_output(call_model(model, inputs))
    scores = forward(model, inputs)
    if not isinstance(scores, Tensor):
        raise UsageError(
            f"forward returned {type(scores).__name__}, expected the scores as a tensor: make "
            f"it return e.g. model(**x).logits"
        )
    return scores


def _describe(inputs: Inputs) -> str:
    """A short description of a batch's inputs, for messages: shapes and dtypes."""
    if isinstance(inputs, Tensor):
        return f"{tuple(inputs.shape)} {str(inputs.dtype).removeprefix('torch.')}"
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in inputs) + ")"
    return type(inputs).__name__


def describe(inputs: Inputs) -> str:
    """Shapes and dtypes of a batch's inputs, e.g. "{input_ids: (8, 16) int64, ...}"."""
    return _describe(inputs)


def numel(inputs: Inputs) -> int:
    """Values in the batch, over every tensor (for costing a step)."""
    return sum(math.prod(t.shape) for t in leaves(inputs))
