"""Weight initialization schemes, one function each, and `apply_init(model, scheme)`.

In the manner of torch.nn.init: a trailing underscore means in place; the formula and the
paper are in each docstring. Where torch already implements a scheme we call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from babysit.nn.activations import activation_info
from babysit.nn.layers import (
    ATTENTION,
    PASS_THROUGH,
    WEIGHT_LAYERS,
    is_parameterised,
    is_weight_layer,
    weight_matrix,
)

__all__ = [
    "INIT_SCHEMES",
    "SCHEMES",
    "WEIGHT_LAYERS",
    "apply_init",
    "fans",
    "he_normal_",
    "large_",
    "lsuv_",
    "orthogonal_",
    "small_",
    "weight_layers",
    "xavier_normal_",
    "xavier_uniform_",
]


# Mishkin & Matas (ICLR 2016), LSUV: the authors' script stops when |Var(out) - 1| < 0.02 or
# after 20 rescalings (their released code; reimplementations often use 0.1 and 10).
LSUV_TOLERANCE = 0.02
LSUV_MAX_ITERATIONS = 20


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in/groups, *kernel) weight."""
    if weight.dim() < 2:
        raise ValueError(
            f"fan_in/fan_out need a weight with >= 2 dims, got shape {tuple(weight.shape)}"
        )
    receptive_field = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def small_(weight: Tensor, std: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """W ~ N(0, 0.01^2): the lecture's `0.01 * np.random.randn(D, H)`.

    Fine for small nets; in deep ones the activations shrink ~100x per layer and collapse to
    zero (CS231n Lecture 6), and so do the gradients.
    """
    return nn.init.normal_(weight, 0.0, std, generator=generator)


def large_(weight: Tensor, std: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """W ~ N(0, 1): the lecture's `1.0 * np.random.randn(D, H)`, which saturates tanh units."""
    return nn.init.normal_(weight, 0.0, std, generator=generator)


def xavier_normal_(
    weight: Tensor,
    gain: float = 1.0,
    mode: str = "fan_in",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Xavier/Glorot normal (Glorot & Bengio, AISTATS 2010).

    mode="fan_in": std = gain / sqrt(fan_in), the lecture's `randn(fan_in, fan_out) /
    sqrt(fan_in)`. mode="fan_avg": std = gain * sqrt(2 / (fan_in + fan_out)), the paper's
    normalized form and torch.nn.init.xavier_normal_. Keeps Var(out) = Var(in) for a linear or
    tanh-like unit; under ReLU it halves the variance at every layer.
    """
    fan_in, fan_out = fans(weight)
    if mode == "fan_in":
        std = gain / math.sqrt(fan_in)
    elif mode == "fan_avg":
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        raise ValueError(f"xavier mode must be 'fan_in' or 'fan_avg', got {mode!r}")
    return nn.init.normal_(weight, 0.0, std, generator=generator)


def xavier_uniform_(
    weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot's normalized uniform init: W ~ U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out))."""
    return nn.init.xavier_uniform_(weight, gain=gain, generator=generator)


def he_normal_(
    weight: Tensor,
    gain: float = math.sqrt(2.0),
    mode: str = "fan_in",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming normal (He et al., ICCV 2015): std = gain / sqrt(fan), gain = sqrt(2) for ReLU.

    The factor 2 makes up for ReLU zeroing half of its inputs, so the variance of the
    pre-activations stays constant through depth. mode="fan_out" preserves the variance of
    the back-propagated gradients instead.
    """
    fan_in, fan_out = fans(weight)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"he mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return nn.init.normal_(weight, 0.0, gain / math.sqrt(fan), generator=generator)


def orthogonal_(
    weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """A (semi-)orthogonal matrix times gain (Saxe, McClelland & Ganguli, ICLR 2014).

    All singular values equal gain, so a deep linear net neither shrinks nor grows any
    direction of the signal. Conv weights are flattened to (out, in * kernel) first.
    """
    return nn.init.orthogonal_(weight, gain=gain, generator=generator)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv layers of a model (and transformers' Conv1D), with their names, in
    registration order."""
    return [(name, m) for name, m in model.named_modules() if is_weight_layer(m)]


def _leaves(model: nn.Module) -> Iterator[nn.Module]:
    for m in model.modules():
        if not list(m.children()):
            yield m


def _following_gains(model: nn.Module) -> dict[nn.Module, float | None]:
    """For each weight layer, the gain of the activation it feeds, or None if it feeds none.

    Read from registration order, which is the forward order of Sequential models and of
    most hand-written ones; a layer whose successor can't be told gets None.
    """
    gains: dict[nn.Module, float | None] = {}
    pending: nn.Module | None = None
    for m in _leaves(model):
        if is_weight_layer(m):
            if pending is not None:
                gains[pending] = None
            pending = m
            continue
        if pending is None or isinstance(m, PASS_THROUGH):
            continue
        info = activation_info(m)
        gains[pending] = info.gain if info is not None else None
        pending = None
    if pending is not None:
        gains[pending] = None
    return gains


def lsuv_(
    model: nn.Module,
    data: Tensor,
    tol: float = LSUV_TOLERANCE,
    max_iterations: int = LSUV_MAX_ITERATIONS,
) -> dict[str, dict[str, float]]:
    """Layer-sequential unit-variance init (Mishkin & Matas, ICLR 2016), in place.

    Every weight layer is first made orthonormal; then, layer by layer in forward order, its
    output on the batch `data` is measured and W <- W / sqrt(Var(output)) is repeated while
    |Var(output) - 1| >= tol, at most `max_iterations` times. Biases are zeroed. Returns, per
    layer, the number of rescalings and the final output variance. The model's buffers (e.g.
    BatchNorm running statistics) are left as they were.
    """
    layers = weight_layers(model)
    if not layers:
        raise ValueError("LSUV found no Linear/Conv layer in the model")
    saved_buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    for _, layer in layers:
        orthogonal_(weight_matrix(layer))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)

    class _Stop(Exception):
        pass

    captured: list[Tensor] = []

    def capture_and_stop(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        captured.append(output)
        raise _Stop

    def output_variance(layer: nn.Module) -> float:
        captured.clear()
        handle = layer.register_forward_hook(capture_and_stop)
        try:
            model(data)
        except _Stop:
            pass
        finally:
            handle.remove()
        return float(captured[0].var())

    report: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, layer in layers:
            variance = output_variance(layer)
            iterations = 0
            while abs(variance - 1.0) >= tol and iterations < max_iterations:
                if variance <= 0 or not math.isfinite(variance):
                    raise ValueError(
                        f"LSUV: layer {name!r} has output variance {variance:g} on the batch; "
                        f"it needs a batch with varied, finite inputs"
                    )
                layer.weight.div_(math.sqrt(variance))
                variance = output_variance(layer)
                iterations += 1
            report[name] = {"iterations": iterations, "variance": variance}
        for name, buffer in model.named_buffers():
            buffer.copy_(saved_buffers[name])
    return report


def _gain_or(gain: float | None, default: float) -> float:
    return default if gain is None else gain


SCHEMES: dict[str, Callable[[Tensor, float | None], object]] = {
    # gain=None means the layer feeds no activation we can tell (e.g. the logits layer).
    "small": lambda w, gain: small_(w),
    "large": lambda w, gain: large_(w),
    # The lecture's Xavier ignores the activation: that is why it collapses under ReLU.
    "xavier": lambda w, gain: xavier_normal_(w),
    "xavier_uniform": lambda w, gain: xavier_uniform_(w),
    "he": lambda w, gain: he_normal_(w, gain=_gain_or(gain, 1.0)),
    "he_fan_out": lambda w, gain: he_normal_(w, gain=_gain_or(gain, 1.0), mode="fan_out"),
    "orthogonal": lambda w, gain: orthogonal_(w, gain=_gain_or(gain, 1.0)),
}
"""Scheme name -> fn(weight, gain). Plus "lsuv" (needs data) and "torch" (PyTorch's defaults),
which apply_init handles itself."""

INIT_SCHEMES: tuple[str, ...] = (*SCHEMES, "lsuv", "torch")
"""Every name apply_init accepts."""


def _batch_of(data) -> Tensor:
    """A tensor batch from a tensor, an (x, y) pair or a Dataset of (x, y) items."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, tuple | list) and data and isinstance(data[0], Tensor):
        return data[0]
    if isinstance(data, torch.utils.data.TensorDataset):
        return data.tensors[0][:512]
    raise TypeError(
        f"LSUV needs a batch of inputs (a tensor or an (x, y) pair), got {type(data).__name__}"
    )


def apply_init(
    model: nn.Module,
    scheme: str,
    data: Tensor | tuple | None = None,
    nonlinearity: str | None = None,
) -> nn.Module:
    """Initialise every Linear/Conv layer of `model` in place with `scheme`; biases to zero.

    Schemes: small, large, xavier, xavier_uniform, he, he_fan_out, orthogonal, lsuv, torch.
    The gain of he/orthogonal comes from the activation each layer feeds (sqrt(2) before a
    ReLU, 5/3 before tanh, 1 before nothing, e.g. the logits). `nonlinearity` overrides that
    for every layer but the last. `lsuv` needs `data`, a batch of inputs. Returns the model.

    Other layer kinds: transformers' Conv1D is a Linear stored (in, out) and is set like
    one; MultiheadAttention's input projection (`in_proj_weight`, a Linear from E to 3E) gets
    the scheme with gain 1, its `out_proj` is a Linear; Embedding, RNN/LSTM/GRU and
    normalization layers keep their own init (a lookup table has no fan-in, and the gates of
    a recurrent cell are not one activation), except under "torch", which resets every
    layer to PyTorch's defaults.
    """
    if scheme == "lsuv":
        if data is None:
            raise ValueError("init 'lsuv' is data-dependent: pass data=<a batch of inputs>")
        lsuv_(model, _batch_of(data))
        return model
    if scheme not in INIT_SCHEMES:
        raise ValueError(
            f"unknown init scheme {scheme!r}; choose one of {', '.join(sorted(INIT_SCHEMES))}"
        )
    if scheme == "torch":
        for m in model.modules():
            if (is_parameterised(m) or isinstance(m, WEIGHT_LAYERS)) and hasattr(
                m, "reset_parameters"
            ):
                m.reset_parameters()
        return model
    layers = weight_layers(model)
    gains = _following_gains(model)
    override = activation_info(nonlinearity).gain if nonlinearity else None
    with torch.no_grad():
        for i, (_, layer) in enumerate(layers):
            gain = gains.get(layer)
            if override is not None and i < len(layers) - 1:
                gain = override
            SCHEMES[scheme](weight_matrix(layer), gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        for m in model.modules():
            if isinstance(m, ATTENTION):
                _init_attention_projection(m, scheme)
    return model


def _init_attention_projection(attention: nn.MultiheadAttention, scheme: str) -> None:
    """The input projection of a MultiheadAttention, packed (3E, E) or as q/k/v weights."""
    weights = [attention.in_proj_weight]
    if weights[0] is None:
        weights = [attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight]
    for weight in weights:
        SCHEMES[scheme](weight, None)
    if attention.in_proj_bias is not None:
        nn.init.zeros_(attention.in_proj_bias)
