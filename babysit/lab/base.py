"""What every lab experiment shares: a Claim checked against a stated threshold, the Result an
experiment returns, its scales and seeds, the Setup it runs with, and the statistics used to
decide over seeds.

An experiment is one module of `babysit.lab.experiments` (see `Experiment.from_module`): its
`run(setup) -> Result` measures, decides each claim by an explicit threshold and returns the
numbers (`Result.data`, JSON-serialisable) that its `figures(data)` draws for the gallery.
The base does the common opening: it validates the scale and seed, picks the device, runs on
one CPU thread, hands `run` that scale's SETTINGS and seeds, and times it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from numbers import Real
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from babysit._validation import check_scalar
from babysit.errors import UsageError

__all__ = [
    "SCALES",
    "Claim",
    "Experiment",
    "Progress",
    "Result",
    "Setup",
    "Spread",
    "Ticker",
    "below",
    "digits",
    "fmt",
    "seeds_for",
    "separated",
    "spread",
    "steps_spread",
]

SCALES = ("tiny", "small", "full")
"""tiny: seconds, for the tests; small: the default, <= 1 minute each on a 2-core CPU;
full: the papers' settings where they are feasible, on CUDA when present."""

# Small models on a CPU run fastest on one intra-op thread: on a loaded 2-core CPU an 8x128
# MLP step (batch 64) took 2.9 ms with 1 thread and 147 ms with torch's default of 2, whose
# threads spin-wait for each other (our measurement, torch 2.13).
CPU_THREADS = 1

Progress = Callable[[int, int, str], None]
"""progress(done, total, what): called by an experiment after each unit of work."""


@dataclass
class Claim:
    """One claim an experiment checks: what it says, where it comes from, the threshold that
    decides it (`expected`), what we measured, and the verdict.

    `exception` is set when the claim is known not to reproduce at this scale: it says why
    and what would be needed to see it (docs/lab.md repeats it). A failed claim with an
    exception is still reported as FAIL, marked "known"; it does not fail the command.
    """

    text: str
    source: str
    expected: str
    measured: str
    passed: bool
    exception: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.passed = bool(self.passed)  # a NumPy or torch bool would not serialise

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def known_failure(self) -> bool:
        return not self.passed and bool(self.exception)


@dataclass
class Result:
    """What one experiment produced: its claims with verdicts, the setting it ran, and the
    numbers behind its figures (`data`, JSON-serialisable)."""

    name: str
    title: str
    summary: str
    setting: str
    scale: str
    seeds: list[int]
    claims: list[Claim]
    data: dict[str, Any]
    device: str = "cpu"
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every claim passed or is a documented known exception."""
        return all(c.passed or c.known_failure for c in self.claims)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["claims"] = [Claim(**c) for c in d["claims"]]
        return cls(**fields)


Figures = Callable[[dict[str, Any]], list[tuple[Any, str]]]
"""figures(data) -> [(matplotlib Figure, caption)]: an experiment's plots, from Result.data."""


@dataclass(frozen=True)
class Setup:
    """What the base hands an experiment's `run`: the scale and that scale's SETTINGS, the
    first seed, the device and the progress callback."""

    name: str
    title: str
    scale: str
    settings: dict[str, Any]
    seed: int
    device: torch.device
    progress: Progress | None = None

    @property
    def seeds(self) -> list[int]:
        """The experiment's seeds: SETTINGS["seeds"] of them, from the first seed."""
        return seeds_for(self.seed, self.settings["seeds"])

    def ticker(self, total: int) -> Ticker:
        """A Ticker reporting `total` units of work to the progress callback."""
        return Ticker(total, self.progress)

    def result(
        self,
        *,
        summary: str,
        setting: str,
        claims: list[Claim],
        data: dict[str, Any],
        seeds: list[int] | None = None,
    ) -> Result:
        """The Result of this run, named, titled and scaled as the setup says."""
        return Result(
            name=self.name,
            title=self.title,
            summary=summary,
            setting=setting,
            scale=self.scale,
            seeds=self.seeds if seeds is None else seeds,
            claims=claims,
            data=data,
        )


@dataclass(frozen=True)
class Experiment:
    """A registered experiment. Calling it validates the scale, picks the device, runs on one
    CPU thread (see CPU_THREADS) and records wall and CPU time; `figures(data)` draws it."""

    name: str
    title: str
    function: Callable[..., Result]
    description: str = ""
    figures: Figures | None = None
    order: float = 0.0

    @classmethod
    def from_module(cls, module: ModuleType) -> Experiment:
        """The experiment a module of `babysit.lab.experiments` defines. Its name is the
        module's; it must have a docstring opening "NAME: what it checks", TITLE, ORDER (its
        place in the lecture, hence in `babysit lab --list` and `all`), SETTINGS (one dict per
        scale, with the same keys), `run(setup) -> Result` and `figures(data)`."""
        name = module.__name__.rpartition(".")[2]
        _check_module(module, name)
        return cls(
            name=name,
            title=module.TITLE,
            function=partial(_run_module, module, name),
            description=_first_paragraph(module.__doc__, name),
            figures=module.figures,
            order=float(module.ORDER),
        )

    def __call__(
        self,
        scale: str = "small",
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: Progress | None = None,
    ) -> Result:
        if scale not in SCALES:
            raise UsageError(f"unknown lab scale {scale!r}; choose one of {', '.join(SCALES)}")
        check_scalar(seed, "lab seed", int, min=0)
        device = _device(device) if device is not None else _default_device(scale)
        wall, cpu = time.perf_counter(), time.process_time()
        with _cpu_threads(device):
            result = self.function(scale=scale, seed=seed, device=device, progress=progress)
        result.device = str(device)
        result.seconds = time.perf_counter() - wall
        result.cpu_seconds = time.process_time() - cpu
        return result


def _run_module(
    module: ModuleType,
    name: str,
    scale: str,
    seed: int,
    device: torch.device,
    progress: Progress | None,
) -> Result:
    setup = Setup(name, module.TITLE, scale, module.SETTINGS[scale], seed, device, progress)
    return module.run(setup)


def _check_module(module: ModuleType, name: str) -> None:
    """A TypeError naming the module and what it lacks, for whoever writes a new experiment."""
    where = f"lab experiment module {module.__name__}"
    doc = module.__doc__ or ""
    if not doc.startswith(f"{name}: "):
        raise TypeError(f"{where}: its docstring must open with {name + ': '!r}, what it checks")
    for attribute, kind in (("TITLE", str), ("ORDER", Real), ("SETTINGS", dict)):
        if not isinstance(getattr(module, attribute, None), kind):
            raise TypeError(f"{where}: define {attribute} ({kind.__name__})")
    for function in ("run", "figures"):
        if not callable(getattr(module, function, None)):
            raise TypeError(f"{where}: define {function}()")
    settings = module.SETTINGS
    if set(settings) != set(SCALES) or len({frozenset(v) for v in settings.values()}) != 1:
        raise TypeError(
            f"{where}: SETTINGS must have one dict per scale ({', '.join(SCALES)}), all with "
            "the same keys, so that every scale runs the same code"
        )


def _first_paragraph(doc: str, name: str) -> str:
    """A docstring's first paragraph, on one line, without the leading "NAME: "."""
    return " ".join(doc.split("\n\n")[0].split()).removeprefix(f"{name}: ")


def _device(device: torch.device | str) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}: use 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r} asked for, but CUDA is not available: use 'cpu'")
    return device


def _default_device(scale: str) -> torch.device:
    """CUDA for `full` when present; the CPU otherwise, so that the default figures are the
    ones docs/lab.md quotes whatever the machine."""
    from babysit.train import default_device

    return default_device() if scale == "full" else torch.device("cpu")


@contextmanager
def _cpu_threads(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Ticker:
    """Counts an experiment's units of work and reports each to `progress`."""

    def __init__(self, total: int, progress: Progress | None):
        self.total = total
        self.done = 0
        self.progress = progress

    def __call__(self, what: str = "") -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, what)


# --- deciding over seeds ------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """The median of a figure over seeds and its range (min, max)."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]


def spread(values: Sequence[float]) -> Spread:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("spread of no values")
    return Spread(statistics.median(values), min(values), max(values), values)


def steps_spread(steps: Sequence[int | None]) -> Spread:
    """The spread of steps to a target over seeds; a run that never reached it counts inf."""
    return spread([math.inf if v is None else v for v in steps])


def separated(lower: Sequence[float], higher: Sequence[float]) -> bool:
    """True when every value of `lower` is below every value of `higher`: the ranges over
    seeds do not overlap. With n seeds each and no real difference, this happens in the
    claimed direction with probability 1 / C(2n, n) (5% for n = 3, 1.4% for 4, 0.4% for 5):
    an exact permutation test. A difference inside the spread counts as "not shown"."""
    return max(lower) < min(higher)


def below(spreads: dict[str, Spread], lower: str) -> dict[str, Any]:
    """A claim's `passed` and `values` when it says that one of two figures lies below the
    other over seeds: `passed` when the range of `spreads[lower]` is entirely below the
    other's (`separated`); `values`, each figure's median by name, in the order given. Use
    as `Claim(text=..., ..., **below({"plain": plain, "bn": bn}, lower="bn"))`."""
    if len(spreads) != 2 or lower not in spreads:
        raise ValueError(f"below needs two named spreads, one of them {lower!r}")
    (higher,) = (s for name, s in spreads.items() if name != lower)
    return {
        "passed": separated(spreads[lower].values, higher.values),
        "values": {name: s.median for name, s in spreads.items()},
    }


def fmt(value: float | Spread | None, digits: int = 3) -> str:
    """A figure for people: 3 significant digits; a Spread as "median [min, max]"."""
    if value is None:
        return "-"
    if isinstance(value, Spread):
        if len(value.values) == 1:
            return fmt(value.median, digits)
        return f"{fmt(value.median, digits)} [{fmt(value.low, digits)}, {fmt(value.high, digits)}]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


# --- data -----------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _digits_split(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from babysit.data import load_data

    train, val = load_data("digits", seed=seed)
    return (*train.tensors, *val.tensors)


def digits(seed: int = 0, standardize: bool = True) -> tuple[tuple[Tensor, Tensor], ...]:
    """The bundled digits, split with `seed`, flattened to 64 features: ((X, y) train, (X, y)
    val). With `standardize` each feature is centred and scaled on the training split
    (CS231n Lecture 6's preprocessing), as most experiments want."""
    from babysit.data import Standardize

    x_train, y_train, x_val, y_val = _digits_split(seed)
    x_train, x_val = x_train.flatten(1), x_val.flatten(1)
    if standardize:
        transform = Standardize().fit(x_train)
        x_train, x_val = transform.transform(x_train), transform.transform(x_val)
    return (x_train, y_train), (x_val, y_val)


def seeds_for(seed: int, count: int) -> list[int]:
    """`count` consecutive seeds starting at `seed`: each one fixes a data split and a run."""
    return list(range(seed, seed + count))
