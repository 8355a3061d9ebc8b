"""Activation functions by name, and the facts about each that the checkup needs.

`activation("relu")` builds a module; `activation_info(module_or_name)` says what the
activation's outputs look like (range, zero-centred or not), where it saturates, whether its
units can die, and which init gain keeps the signal's second moment through a layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ActivationInfo",
    "Maxout",
    "activation",
    "activation_info",
    "second_moment_gain",
]

# A tanh/sigmoid unit counts as saturated when its local derivative is below this fraction of
# the activation's peak derivative: the gradient through it is then >20x smaller than at the
# centre. The lecture calls units at |tanh| ~ 1 "saturated"; this fixes a number: for tanh it
# means |y| > 0.975, for sigmoid y < 0.013 or y > 0.987.
SATURATION_DERIVATIVE_FRACTION = 0.05


class Maxout(nn.Module):
    """Maxout (Goodfellow et al., ICML 2013): the max over groups of `k` consecutive channels.

    It works on dimension 1, so it follows a Linear (N, k*C) or a Conv (N, k*C, H, W) and
    returns C channels. The layer in front of it must therefore produce k times the channels
    of a plain layer, and holds k times its parameters: a maxout layer of C units on D inputs
    has k*C*(D+1) parameters where a ReLU layer has C*(D+1). The model builders widen that
    layer for you.
    """

    def __init__(self, k: int = 2):
        super().__init__()
        if int(k) != k or k < 1:
            raise ValueError(f"Maxout needs k >= 1 pieces, got k={k!r}")
        self.k = int(k)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels % self.k:
            raise ValueError(
                f"Maxout(k={self.k}) got {channels} channels, not a multiple of k: "
                f"make the layer in front of it produce k * units channels"
            )
        grouped = x.unflatten(1, (channels // self.k, self.k))
        return grouped.amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def second_moment_gain(fn: Callable[[Tensor], Tensor]) -> float:
    """Gain g that keeps the second moment through a layer: g = 1 / sqrt(E[f(z)^2]), z ~ N(0, 1).

    With weights of std g/sqrt(fan_in), a layer fed by f(z) has pre-activations of unit
    variance again. This is He et al.'s (ICCV 2015) argument; it gives exactly sqrt(2) for ReLU
    and sqrt(2 / (1 + a^2)) for Leaky ReLU, the values torch.nn.init.calculate_gain uses. We use
    it for the activations torch gives no gain for (ELU, PReLU, Maxout, GELU, SiLU).
    The expectation is a trapezoid rule on [-12, 12], accurate to ~1e-9 here.
    """
    z = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    second_moment = torch.trapezoid(fn(z) ** 2 * density, z).item()
    return 1.0 / math.sqrt(second_moment)


def _maxout_second_moment_gain(k: int) -> float:
    """Gain for Maxout with k pieces: E[max of k iid N(0,1)]^2 has density k*phi*Phi^(k-1)."""
    z = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = torch.special.ndtr(z)
    second_moment = torch.trapezoid(z**2 * k * density * cdf ** (k - 1), z).item()
    return 1.0 / math.sqrt(second_moment)


@dataclass(frozen=True)
class ActivationInfo:
    """What the checkup needs to know about an activation function.

    output_range: (low, high) of its outputs. zero_centered: its outputs have mean ~0 for
    zero-mean input (the lecture's complaint about sigmoid is that they do not). saturates:
    where the gradient vanishes ("both" ends, "negative" side, or "none"). can_die: units can
    get stuck with zero gradient for every input (ReLU). gain: the init gain it wants.
    """

    name: str
    output_range: tuple[float, float]
    zero_centered: bool
    saturates: str
    can_die: bool
    gain: float
    derivative: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)

    def saturated(self, output: Tensor) -> Tensor:
        """Boolean mask: where the unit's derivative, read off its output, is near zero."""
        if self.derivative is None:
            return torch.zeros_like(output, dtype=torch.bool)
        return self.derivative(output) < SATURATION_DERIVATIVE_FRACTION * self._peak_derivative

    @property
    def _peak_derivative(self) -> float:
        return 0.25 if self.name == "sigmoid" else 1.0


def _tanh_derivative(y: Tensor) -> Tensor:
    return 1 - y * y


def _sigmoid_derivative(y: Tensor) -> Tensor:
    return y * (1 - y)


def _relu_like(name: str, gain: float) -> ActivationInfo:
    return ActivationInfo(name, (0.0, math.inf), False, "none", name == "relu", gain)


# The gains torch.nn.init.calculate_gain defines are copied as torch has them, so our init
# agrees with torch's; the rest come from second_moment_gain (see its docstring).
_ELU_GAIN = second_moment_gain(nn.functional.elu)
_GELU_GAIN = second_moment_gain(nn.functional.gelu)
_SILU_GAIN = second_moment_gain(nn.functional.silu)


def _info(name: str, **kw) -> ActivationInfo:
    """Facts for one registered activation, given its constructor arguments."""
    if name == "sigmoid":
        return ActivationInfo(name, (0.0, 1.0), False, "both", False, 1.0, _sigmoid_derivative)
    if name == "tanh":
        return ActivationInfo(name, (-1.0, 1.0), True, "both", False, 5.0 / 3, _tanh_derivative)
    if name == "relu":
        return _relu_like(name, math.sqrt(2.0))
    if name in ("leaky_relu", "prelu"):
        slope = kw.get("negative_slope", kw.get("init", 0.01 if name == "leaky_relu" else 0.25))
        # He et al. (ICCV 2015), eq. 15: Var preserved with std = sqrt(2 / ((1 + a^2) fan_in)).
        # For PReLU a is the learnable slope at init (0.25 by default), as in that paper.
        gain = math.sqrt(2.0 / (1 + slope**2))
        return ActivationInfo(name, (-math.inf, math.inf), False, "none", False, gain)
    if name == "elu":
        alpha = kw.get("alpha", 1.0)
        gain = (
            _ELU_GAIN
            if alpha == 1.0
            else second_moment_gain(lambda z: nn.functional.elu(z, alpha=alpha))
        )
        # ELU's outputs have mean closer to zero than ReLU's (Clevert et al., ICLR 2016), but
        # not zero: we do not call it zero-centred.
        return ActivationInfo(name, (-alpha, math.inf), False, "negative", False, gain)
    if name == "maxout":
        k = kw.get("k", 2)
        return ActivationInfo(
            name, (-math.inf, math.inf), False, "none", False, _maxout_second_moment_gain(k)
        )
    if name == "gelu":
        return ActivationInfo(name, (-0.17, math.inf), False, "none", False, _GELU_GAIN)
    if name == "silu":
        return ActivationInfo(name, (-0.28, math.inf), False, "none", False, _SILU_GAIN)
    if name == "identity":
        return ActivationInfo(name, (-math.inf, math.inf), True, "none", False, 1.0)
    if name == "softmax":
        # Only ever an output: the checkup flags it before a cross-entropy loss.
        return ActivationInfo(name, (0.0, 1.0), False, "both", False, 1.0)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}")


def _prelu(num_parameters: int = 1, init: float = 0.25) -> nn.Module:
    """PReLU with one learnable slope, or one per channel (num_parameters=channels)."""
    return nn.PReLU(num_parameters=num_parameters, init=init)


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda negative_slope=0.01: nn.LeakyReLU(negative_slope),
    "prelu": _prelu,
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "maxout": lambda k=2: Maxout(k),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
"""Name -> constructor. The lecture's seven are sigmoid, tanh, relu, leaky_relu, prelu, elu
and maxout; gelu, silu and identity are here so that models using them can be described."""


def activation(name: str, **kwargs) -> nn.Module:
    """Build an activation module by name, e.g. `activation("leaky_relu", negative_slope=0.1)`."""
    try:
        factory = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
    return factory(**kwargs)


def activation_info(activation_: nn.Module | str, **kwargs) -> ActivationInfo | None:
    """Facts about an activation given by name or by module; None if it is not an activation.

    Modules are recognised by type (torch's own activation classes and ours), so this works on
    models that babysit did not build.
    """
    if isinstance(activation_, str):
        return _info(activation_, **kwargs)
    m = activation_
    for kind, name, parameters in _RECOGNISED:
        if isinstance(m, kind):
            return _info(name, **parameters(m))
    return None


_RECOGNISED: tuple[tuple[type | UnionType, str, Callable[[Any], dict[str, Any]]], ...] = (
    (nn.Sigmoid, "sigmoid", lambda m: {}),
    (nn.Tanh, "tanh", lambda m: {}),
    (nn.ReLU | nn.ReLU6, "relu", lambda m: {}),
    (nn.LeakyReLU, "leaky_relu", lambda m: {"negative_slope": m.negative_slope}),
    (nn.PReLU, "prelu", lambda m: {"init": float(m.weight.detach().mean())}),
    (nn.ELU, "elu", lambda m: {"alpha": m.alpha}),
    (Maxout, "maxout", lambda m: {"k": m.k}),
    (nn.GELU, "gelu", lambda m: {}),
    (nn.SiLU, "silu", lambda m: {}),
    (nn.Softmax | nn.LogSoftmax, "softmax", lambda m: {}),
)
"""Activation module types `activation_info` recognises, in the order it tries them: the
name and the parameters it reads off the module."""
