"""Building blocks: activations by name, init schemes, and model builders."""

from babysit.nn.activations import (
    ACTIVATIONS,
    ActivationInfo,
    Maxout,
    activation,
    activation_info,
)
from babysit.nn.init import SCHEMES, apply_init, fans, lsuv_, weight_layers
from babysit.nn.models import cnn, default_model, from_spec, mlp

__all__ = [
    "ACTIVATIONS",
    "SCHEMES",
    "ActivationInfo",
    "Maxout",
    "activation",
    "activation_info",
    "apply_init",
    "cnn",
    "default_model",
    "from_spec",
    "fans",
    "lsuv_",
    "mlp",
    "weight_layers",
]
