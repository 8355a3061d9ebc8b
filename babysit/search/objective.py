"""The objective a search config describes: build a model, train it with `babysit.train.fit` on
`load_data(spec)`, return the last epoch's validation accuracy.

Hyperparameters it knows (each either searched in [space] or held in [fixed]):
- the loop's: lr, weight_decay, momentum, optimizer, batch_size;
- the `mlp`/`cnn` builders': width (units or channels per layer), depth (layers), activation,
  init, batch_norm, dropout;
- for a model of one's own (`model = "MODULE:FUNCTION"`), any keyword argument of FUNCTION.
Every trial trains from the same seed (common random numbers: two trials differ only by their
hyperparameters, not by their initialization or batch order).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from babysit.data.preprocess import TRANSFORMS, fit_apply
from babysit.errors import ConfigError, UsageError
from babysit.nn import ACTIVATIONS, INIT_SCHEMES, cnn, from_spec, load_function, mlp
from babysit.search.space import Categorical, Int, Param, describe_limits, within
from babysit.search.trial import Trial
from babysit.train import OPTIMIZERS, fit, make_optimizer

__all__ = ["BUILDERS", "HYPERPARAMETERS", "PREPROCESSING", "Hyperparameter", "ModelObjective"]

BUILDERS = ("mlp", "cnn")
PREPROCESSING = tuple(TRANSFORMS)
# lsuv needs a batch of inputs to calibrate on: this many training examples.
LSUV_BATCH = 256


@dataclass(frozen=True)
class Hyperparameter:
    """What a known hyperparameter is: its kind ("float", "int", "choice", "bool"), default,
    hard limits for numbers (an open side excludes the limit), or allowed values for choices."""

    kind: str
    default: Any
    limits: tuple[float, float] = (-math.inf, math.inf)
    open_limits: tuple[bool, bool] = (False, False)
    choices: tuple = ()
    model: bool = False  # goes to the model builder rather than the training loop


LOOP = {
    "lr": Hyperparameter("float", 1e-2, (0.0, math.inf), (True, False)),
    "weight_decay": Hyperparameter("float", 0.0, (0.0, math.inf)),
    # SGD momentum: the usual 0.9 (CS231n notes, Part 3); 1 would never forget a gradient.
    "momentum": Hyperparameter("float", 0.9, (0.0, 1.0), (False, True)),
    "optimizer": Hyperparameter("choice", "momentum", choices=OPTIMIZERS),
    "batch_size": Hyperparameter("int", 64, (1, math.inf)),
}
MODEL = {
    # The lecture's fully connected net: hidden layers of 100 ReLU units, He init.
    "width": Hyperparameter("int", 100, (1, math.inf), model=True),
    "depth": Hyperparameter("int", 1, (1, math.inf), model=True),
    "activation": Hyperparameter("choice", "relu", choices=tuple(ACTIVATIONS), model=True),
    "init": Hyperparameter("choice", "he", choices=INIT_SCHEMES, model=True),
    "batch_norm": Hyperparameter("bool", False, choices=(False, True), model=True),
    # Dropout 1 would zero every unit.
    "dropout": Hyperparameter("float", 0.0, (0.0, 1.0), (False, True), model=True),
}
HYPERPARAMETERS = {**LOOP, **MODEL}


def known_hyperparameters(model: str) -> dict[str, Hyperparameter]:
    """The hyperparameters a config with this `model` may name."""
    if model in BUILDERS:
        return dict(HYPERPARAMETERS)
    function = _import_function(model)
    names = {
        name: Hyperparameter("any", p.default if p.default is not p.empty else None, model=True)
        for name, p in inspect.signature(function).parameters.items()
        if name not in ("input_shape", "classes")
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return {**LOOP, **names}


def check_hyperparameters(
    model: str, fixed: Mapping[str, Any], space: Mapping[str, Param]
) -> dict[str, Hyperparameter]:
    """Raise a ConfigError for an unknown name, a value of the wrong kind or outside its
    limits, in [fixed] or [space]; return the known hyperparameters."""
    known = known_hyperparameters(model)
    for name in [*fixed, *space]:
        if name not in known:
            where = "mlp/cnn" if model in BUILDERS else model
            raise ConfigError(
                f"unknown hyperparameter {name!r} for {where}; known: {', '.join(sorted(known))}"
            )
    for name, value in fixed.items():
        _check_value(name, known[name], value)
    for name, param in space.items():
        spec = known[name]
        if isinstance(param, Categorical):
            for value in param.choices:
                _check_value(name, spec, value)
        elif spec.kind in ("choice", "bool"):
            raise ConfigError(
                f"{name} is a choice: give a list, e.g. {name} = {list(spec.choices)}"
            )
        elif spec.kind == "int" and not isinstance(param, Int):
            raise ConfigError(f"{name} takes integers: give integer bounds, got {param.describe()}")
        elif spec.kind != "any":
            for bound in (param.low, param.high):
                _check_value(name, spec, bound)
    return known


def _check_value(name: str, spec: Hyperparameter, value: Any) -> None:
    if spec.kind == "any":
        return
    if spec.kind in ("choice", "bool"):
        if not any(type(value) is type(c) and value == c for c in spec.choices):
            allowed = ", ".join(map(repr, spec.choices))
            raise ConfigError(f"{name} = {value!r} is not allowed; choose from {allowed}")
        return
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (spec.kind == "int" and int(value) != value):
        expected = "an integer" if spec.kind == "int" else "a number"
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    if not within(value, spec.limits, spec.open_limits):
        allowed = describe_limits(spec.limits, spec.open_limits)
        raise ConfigError(f"{name} = {value!r} is outside its allowed range {allowed}")


class ModelObjective:
    """The config's objective: `objective(trial) -> validation accuracy`. Loads (and
    preprocesses) the data once, so that a worker pays for it once."""

    def __init__(
        self,
        data: str = "digits",
        model: str = "mlp",
        fixed: Mapping[str, Any] | None = None,
        preprocess: str | None = None,
        seed: int = 0,
    ):
        from babysit.data import load_data

        self.model, self.seed = model, seed
        self.fixed = dict(fixed or {})
        self.known = known_hyperparameters(model)
        splits = load_data(data, seed=seed)
        if splits.val is None:
            raise UsageError(f"data {data!r} has no validation split to score trials on")
        self.train, self.val = fit_apply(preprocess, splits.train, splits.val)
        self.input_shape, self.classes = splits.input_shape, splits.classes
        # Refused here, before any study exists, rather than in every trial.
        if model == "cnn" and len(self.input_shape) != 3:
            raise UsageError(
                f"the cnn builder needs images (C, H, W), got inputs of {self.input_shape}; "
                f"use model = \"mlp\""
            )
        labels = self.train.tensors[1]
        if labels.is_floating_point() or labels.is_complex() or labels.dim() != 1:
            raise UsageError(
                f"data {data!r} has no class labels (targets of {labels.dtype}, shape "
                f"{tuple(labels.shape)}): the search scores validation accuracy"
            )

    def hyperparameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults, overridden by [fixed], overridden by the trial's sampled values."""
        defaults = {n: h.default for n, h in self.known.items() if h.kind != "any"}
        return {**defaults, **self.fixed, **params}

    def build(self, hp: Mapping[str, Any]) -> nn.Module:
        torch.manual_seed(self.seed)
        if self.model in BUILDERS:
            init_data = self.train.tensors[0][:LSUV_BATCH] if hp["init"] == "lsuv" else None
            common = dict(
                activation=hp["activation"],
                init=hp["init"],
                batch_norm=hp["batch_norm"],
                dropout=hp["dropout"],
                init_data=init_data,
            )
            layers = [int(hp["width"])] * int(hp["depth"])
            if self.model == "mlp":
                return mlp(self.input_shape, layers, self.classes, **common)
            channels, height, width = self.input_shape
            return cnn(channels, (height, width), layers, self.classes, **common)
        kwargs = {k: v for k, v in hp.items() if k in self.known and k not in LOOP}
        return from_spec(self.model, self.input_shape, self.classes, **kwargs)

    def __call__(self, trial: Trial) -> float:
        hp = self.hyperparameters(trial.params)
        model = self.build(hp)
        optimizer = make_optimizer(
            hp["optimizer"], model.parameters(), hp["lr"], hp["weight_decay"], hp["momentum"]
        )
        state = trial.load_checkpoint()  # a promoted trial continues its parent
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        history = fit(
            model,
            self.train,
            self.val,
            epochs=(trial.epochs or 1) - trial.epochs_before,
            max_steps=trial.steps,
            optimizer=optimizer,
            batch_size=int(hp["batch_size"]),
            seed=self.seed + trial.epochs_before,  # a continued run sees new batch orders
            callbacks=[trial.callback],
        )
        trial.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        accuracy = history.last("val_accuracy")
        if accuracy is None:
            raise UsageError("the data has no class labels: the search scores val accuracy")
        return accuracy


def _import_function(spec: str) -> Callable[..., Any]:
    """The FUNCTION a `MODULE:FUNCTION` spec names, so that its keyword arguments can be
    searched; import problems are config errors."""
    try:
        return load_function(spec)
    except ConfigError:
        raise
    except UsageError as e:
        raise ConfigError(
            f"model must be mlp, cnn or MODULE:FUNCTION (or FILE.py:FUNCTION): {e}"
        ) from None
