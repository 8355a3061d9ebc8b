"""Search configs in TOML or YAML: read, validate every field, and say what is wrong in one line.

    study = "digits-mlp"          # optional; default: the file's name
    data = "digits"               # any load_data spec
    preprocess = "standardize"    # optional: standardize, mean_image, per_channel_mean, zca, pca
    model = "mlp"                 # mlp, cnn, or MODULE:FUNCTION
    seed = 0

    [fixed]                       # hyperparameters held fixed (defaults otherwise)
    optimizer = "momentum"

    [space]                       # hyperparameters searched
    lr = { low = 1e-6, high = 10 }            # log-uniform by default (lr, weight_decay)
    weight_decay = { low = 1e-6, high = 1 }
    width = { low = 16, high = 512, log = true }
    activation = ["relu", "tanh"]

    [narrowing]                   # optional: top, top_min, pad, edge, widen, margin
    widen = false

    [[stages]]
    trials = 40
    epochs = 1

See docs/search.md for every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babysit.errors import ConfigError, UsageError
from babysit.search.objective import PREPROCESSING, ModelObjective, check_hyperparameters
from babysit.search.plan import Plan
from babysit.search.space import LOG_BY_DEFAULT, Narrowing, parse_space, with_limits
from babysit.search.stages import DEFAULT_STAGES, check_stages, without_promotion
from babysit.train.callbacks import LOSS_ABORT_FACTOR

__all__ = ["SearchConfig", "default_out", "load_config", "parse_config"]

# A study name that becomes a folder under runs/: one plain path component.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUNS = Path("runs")

_TOP_KEYS = {
    "study",
    "data",
    "preprocess",
    "model",
    "seed",
    "loss_ratio",
    "fixed",
    "space",
    "stages",
    "narrowing",
    "promotion",
}


@dataclass(frozen=True)
class SearchConfig:
    """A validated config: the study name, the objective's settings and the plan."""

    study: str
    data: str
    preprocess: str | None
    model: str
    fixed: dict[str, Any]
    plan: Plan
    path: Path | None = None

    def objective(self) -> ModelObjective:
        """The ModelObjective this config describes (loads the data)."""
        return ModelObjective(self.data, self.model, self.fixed, self.preprocess, self.plan.seed)


def default_out(study: str) -> Path:
    """runs/STUDY, the default run folder, for a study name that is one plain folder name."""
    if not _FOLDER_NAME.fullmatch(study):
        raise UsageError(
            f"study name {study!r} would make the folder {RUNS / study}, outside runs/: use a "
            f"plain name (letters, digits, '.', '_', '-'), or give --out DIR"
        )
    return RUNS / study


def load_config(path: str | Path) -> SearchConfig:
    """Read a .toml, .yaml or .yml search config."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"search config {str(path)!r} is a directory: give a .toml or .yaml file, e.g. "
            f"examples/search_digits.toml"
        )
    if not path.is_file():
        raise ConfigError(f"search config {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError(
                    "TOML configs need Python 3.11+ or `pip install tomli`; or write it in YAML"
                ) from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: malformed TOML: {e}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: no Python objects
        except yaml.YAMLError as e:
            message = " ".join(str(e).split())
            raise ConfigError(f"{path}: malformed YAML: {message}") from None
    else:
        raise ConfigError(f"search config {str(path)!r} must end in .toml, .yaml or .yml")
    try:
        return parse_config(raw, default_study=path.stem, path=path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_config(
    raw: Any, default_study: str = "babysit", path: Path | None = None
) -> SearchConfig:
    """A SearchConfig from plain data (what TOML/YAML give)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a search config is a table of keys, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key {sorted(unknown)[0]!r}; the keys are {', '.join(sorted(_TOP_KEYS))}"
        )
    study = _string(raw, "study", default_study)
    data = _string(raw, "data", "digits")
    model = _string(raw, "model", "mlp")
    preprocess = raw.get("preprocess")
    if preprocess is not None and preprocess not in PREPROCESSING:
        raise ConfigError(
            f"unknown preprocess {preprocess!r}; choose one of {', '.join(PREPROCESSING)}"
        )
    fixed = raw.get("fixed", {})
    if not isinstance(fixed, Mapping):
        raise ConfigError(f"[fixed] must be a table of name = value, got {fixed!r}")
    if "space" not in raw:
        raise ConfigError(
            f"no [space]: name the hyperparameters to search, e.g. lr = {{low = 1e-6, high = 10}}"
            f" (log-uniform by default for {' and '.join(LOG_BY_DEFAULT)})"
        )
    space = parse_space(raw["space"])
    both = sorted(set(fixed) & set(space))
    if both:
        raise ConfigError(f"{both[0]} is both in [fixed] and in [space]; keep one")
    known = check_hyperparameters(model, fixed, space)
    numeric = {n: (h.limits, h.open_limits) for n, h in known.items() if h.kind in ("float", "int")}
    space = with_limits(space, numeric)
    stages = tuple(check_stages(raw["stages"])) if "stages" in raw else DEFAULT_STAGES
    promotion = raw.get("promotion", True)
    if not isinstance(promotion, bool):
        raise ConfigError(f"promotion must be true or false, got {promotion!r}")
    if not promotion:  # every stage's trials afresh, whatever the stages say
        stages = without_promotion(stages)
    narrowing = Narrowing.from_dict(raw.get("narrowing", {}))
    seed, loss_ratio = raw.get("seed", 0), raw.get("loss_ratio", LOSS_ABORT_FACTOR)
    objective = {"data": data, "preprocess": preprocess, "model": model, "fixed": dict(fixed)}
    plan = Plan(space, stages, narrowing, seed, loss_ratio, objective=objective)
    return SearchConfig(study, data, preprocess, model, dict(fixed), plan, path)


# YAML 1.1 (PyYAML) reads a float only with a dot, so `1e-3` would be the string "1e-3";
# YAML 1.2 and TOML read it as a number. This pattern adds 1e-3, 1E+5, -2e-6 to the floats.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _yaml_loader():
    """PyYAML's SafeLoader that also reads `1e-3` as a float (as YAML 1.2 and TOML do)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    return Loader


def _string(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value
