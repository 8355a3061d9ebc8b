"""Building blocks: activations by name, init schemes, and model builders."""

from babysit.nn.activations import (
    ACTIVATIONS,
    ActivationInfo,
    Maxout,
    activation,
    activation_info,
)
from babysit.nn.init import INIT_SCHEMES, SCHEMES, apply_init, fans, lsuv_, weight_layers
from babysit.nn.models import cnn, default_model, from_spec, load_function, mlp

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
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
    "load_function",
    "lsuv_",
    "mlp",
    "weight_layers",
]
