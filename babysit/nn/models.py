"""Model builders: plain MLPs and CNNs with a chosen activation, init and batch norm.

Batch norm goes after each Linear/Conv and before the nonlinearity, as the lecture (and
Ioffe & Szegedy 2015) place it; in eval mode it uses its running averages (torch's
BatchNorm does this). The lecture's "10 layers of 500 tanh units with 0.01 init" is
`mlp(500, [500] * 10, 10, activation="tanh", init="small")`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from babysit.nn.activations import activation as make_activation
from babysit.nn.init import apply_init

__all__ = ["CLASS_KEYWORDS", "cnn", "default_model", "from_spec", "load_function", "mlp"]


def _activation(name: str, width: int, kwargs: dict) -> nn.Module:
    kwargs = dict(kwargs)
    if name == "prelu" and kwargs.pop("per_channel", False):
        kwargs["num_parameters"] = width
    return make_activation(name, **kwargs)


def _pieces(name: str, kwargs: dict) -> int:
    """How many times wider the layer in front of the activation must be (k for Maxout)."""
    return int(kwargs.get("k", 2)) if name == "maxout" else 1


def _check_widths(widths: Sequence[int], what: str) -> None:
    if any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"{what} must be positive integers, got {list(widths)}")


def mlp(
    in_features: int | Sequence[int],
    hidden: Sequence[int],
    classes: int,
    activation: str = "relu",
    init: str = "he",
    batch_norm: bool = False,
    dropout: float = 0.0,
    activation_kwargs: dict | None = None,
    init_data: Tensor | None = None,
) -> nn.Sequential:
    """A fully connected net: Flatten, then per hidden width Linear [-> BatchNorm] -> act
    [-> Dropout], then a Linear to `classes` logits.

    `in_features` may be an input shape such as (1, 8, 8). With activation="maxout" each
    hidden Linear produces k * width features for Maxout(k) to reduce. `activation_kwargs`
    go to the activation (e.g. {"negative_slope": 0.1}; {"per_channel": True} for PReLU).
    `init_data` is a batch of inputs, needed by init="lsuv".
    """
    activation_kwargs = activation_kwargs or {}
    in_features = math.prod(in_features) if isinstance(in_features, Sequence) else in_features
    _check_widths([in_features, *hidden, classes], "in_features, hidden widths and classes")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    k = _pieces(activation, activation_kwargs)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width_in = in_features
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width_in, width * k, bias=not batch_norm)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(width * k)
        layers[f"{activation}{i}"] = _activation(activation, width, activation_kwargs)
        if dropout:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        width_in = width
    layers["logits"] = nn.Linear(width_in, classes)
    model = nn.Sequential(layers)
    return apply_init(model, init, data=init_data)


def cnn(
    in_channels: int,
    image_size: int | Sequence[int],
    channels: Sequence[int],
    classes: int,
    activation: str = "relu",
    init: str = "he",
    batch_norm: bool = False,
    dropout: float = 0.0,
    kernel_size: int = 3,
    activation_kwargs: dict | None = None,
    init_data: Tensor | None = None,
) -> nn.Sequential:
    """A conv net: per entry of `channels`, Conv (same padding) [-> BatchNorm2d] -> act
    [-> Dropout] -> 2x2 max-pool (while the image is at least 2x2), then Flatten and a Linear
    to `classes` logits. Options as in `mlp`."""
    activation_kwargs = activation_kwargs or {}
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    _check_widths([in_channels, height, width, *channels, classes], "channels, sizes and classes")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd to keep the image size, got {kernel_size}")
    k = _pieces(activation, activation_kwargs)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels_in = in_channels
    for i, out in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(
            channels_in, out * k, kernel_size, padding=kernel_size // 2, bias=not batch_norm
        )
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(out * k)
        layers[f"{activation}{i}"] = _activation(activation, out, activation_kwargs)
        if dropout:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        if height >= 2 and width >= 2:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            height, width = height // 2, width // 2
        channels_in = out
    layers["flatten"] = nn.Flatten()
    layers["logits"] = nn.Linear(channels_in * height * width, classes)
    model = nn.Sequential(layers)
    return apply_init(model, init, data=init_data)


def default_model(input_shape: Sequence[int], classes: int) -> nn.Sequential:
    """The model `babysit doctor` and `babysit train` use when none is given: the lecture's
    fully connected net with two hidden layers of 100 ReLU units, He init."""
    return mlp(tuple(input_shape), [100, 100], classes, activation="relu", init="he")


def load_function(spec: str):
    """The FUNCTION a `MODULE:FUNCTION` (or `path/to/file.py:FUNCTION`) spec names.

    A module is imported as `python -m` would (the current directory is importable); a file
    is loaded from its path. Errors are one-line UsageErrors naming the spec.
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    from babysit.errors import UsageError

    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise UsageError(
            f"model spec must look like MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}"
        )
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UsageError(f"model file {str(path)!r} does not exist")
            import_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(import_spec)
            sys.modules.setdefault(path.stem, module)
            import_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import model module {module_name!r}: {e}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"{module_name!r} has no function {function_name!r}")
    return function


# The names factories give the number of classes (or outputs, or the vocabulary), most usual
# first: ours, torchvision's and timm's (num_classes), Hugging Face configs' (vocab_size,
# num_labels), torch.nn's (out_features) and others seen in the wild.
CLASS_KEYWORDS = (
    "classes",
    "num_classes",
    "n_classes",
    "vocab_size",
    "num_labels",
    "out_features",
    "num_outputs",
    "n_outputs",
    "output_size",
    "out_channels",
)


def from_spec(spec: str, input_shape: Sequence[int], classes: int, **kwargs) -> nn.Module:
    """Build the model a `MODULE:FUNCTION` (or `path/to/file.py:FUNCTION`) spec names.

    FUNCTION returns an nn.Module. It may take the input shape (per example, e.g. (1, 8, 8))
    as `input_shape` (and the channels of an image as `in_channels`), and the number of
    classes under the first of CLASS_KEYWORDS its signature has (`classes`, `num_classes`,
    `vocab_size`, ...; a function with only **kwargs, like torchvision's, gets
    `num_classes`); or the two as its first two positional parameters; or nothing at all.
    `kwargs` (e.g. searched hyperparameters) are passed on by name. A required parameter
    none of these fills is a one-line UsageError that names it.
    """
    import inspect

    from babysit.errors import UsageError

    function = load_function(spec)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        parameters = {}
    kinds = {p.kind for p in parameters.values()}
    given: dict = {}
    if "input_shape" in parameters:
        given["input_shape"] = tuple(input_shape)
    if "in_channels" in parameters and len(input_shape) == 3:
        given["in_channels"] = int(input_shape[0])
    keyword = next((k for k in CLASS_KEYWORDS if k in parameters), None)
    if keyword is None and inspect.Parameter.VAR_KEYWORD in kinds:
        keyword = "num_classes"  # torchvision: resnet18(*, weights=None, **kwargs)
    if keyword is not None:
        given[keyword] = classes
    positional = [
        p
        for p in parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in given
        and p.name not in kwargs
    ]
    if not given and not kwargs and len(positional) >= 2:
        model = function(tuple(input_shape), classes)
    else:
        missing = [
            p.name
            for p in parameters.values()
            if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in given
            and p.name not in kwargs
        ]
        if missing:
            raise UsageError(
                f"{spec} needs {', '.join(missing)}, which babysit cannot give: it passes "
                f"input_shape, in_channels and the number of classes as one of "
                f"{', '.join(CLASS_KEYWORDS)}; give the others defaults"
            )
        model = function(**given, **kwargs)
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model
