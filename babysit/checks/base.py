"""A check of the checkup, as one small object on a tiny base (in the manner of Lightning's
callbacks and Optuna's pruners): its name, the codes it raises, when it steps aside,
`run(context) -> (findings, measurement)`, how its measurement reads in the report's "what
was checked" table, and the figures the report draws from it.

The checkup (babysit.doctor) runs the registry (babysit.checks.registry) over one Context:
the data, the task, the forward trace, the budget and what earlier checks found.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from babysit.checks.findings import CODES, Finding, Severity
from babysit.checks.task import Task
from babysit.data.batches import Inputs, in_memory, integer_inputs, sample, select
from babysit.errors import UsageError
from babysit.probes.trace import Trace

__all__ = ["Check", "Context", "Figure", "Found", "draw", "fmt", "one_line"]

Found = tuple[list[Finding], dict[str, Any] | None]


@dataclass(frozen=True)
class Figure:
    """A figure the report draws for a check: `plot` names a function of babysit.report.plots,
    called with the measurements under `inputs` (missing ones as None). Checks never plot."""

    file: str
    plot: str
    inputs: tuple[str, ...]
    alt: str
    caption: str


@dataclass
class Context:
    """What the checks read, and what they have found so far.

    `sample_x`, `sample_y`: the examples drawn from the data (on the model's device), `index`
    their indices in it; `x`, `y`: those with finite inputs; `batch`, `batch_y`: the first
    `budget.audit_examples` of these; `trace`: one forward pass of `batch` (None when no
    example is finite); `whole`: the whole (X, y) when it is in memory anyway, else None.
    Inputs are `babysit.data.batches.Inputs` (a tensor, tuple or dict of tensors): index
    them with `batches.select`, call the model with `task.output(model, inputs)`.
    `findings` and `measurements` grow as the checks run.
    """

    model: nn.Module
    task: Task
    x: Inputs
    y: Tensor
    sample_x: Inputs
    sample_y: Tensor
    index: Tensor
    whole: tuple[Inputs, Tensor] | None
    trace: Trace | None
    budget: Any
    lr: float | None = None
    optimizer: str = "sgd"
    quick: bool = True
    seed: int = 0
    val_data: object = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    findings: list[Finding] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    gates: frozenset[str] = frozenset()  # the keys of the checks whose errors block the rest
    plan: Any = None  # babysit.checks.plan.Plan: the budget's origin, sub-batches, early stops
    _audit_inputs: tuple[Inputs, str] | None = None

    @property
    def training_args(self) -> tuple[nn.Module, Inputs, Tensor, Task]:
        """(model, x, y, task): the first arguments of the checks that train a copy."""
        return self.model, self.x, self.y, self.task

    @property
    def batch(self) -> Inputs:
        return select(self.x, slice(0, self.budget.audit_examples))

    @property
    def batch_y(self) -> Tensor:
        return self.y[: self.budget.audit_examples]

    def raised(self, *codes: str, severity: Severity | None = None) -> list[Finding]:
        """The findings so far with one of `codes` (any code when none is given)."""
        return [
            f
            for f in self.findings
            if (not codes or f.code in codes) and (severity is None or f.severity == severity)
        ]

    def amend(self, finding: Finding, **changes: Any) -> None:
        """Replace an earlier finding by a copy with `changes`: a later check that measured
        more about it (the first loss behind a data finding, a fit behind DEAD_UNITS)."""
        i = next(i for i, f in enumerate(self.findings) if f is finding)
        self.findings[i] = replace(finding, **changes)

    def blocked(self) -> str | None:
        """Why the checks that train or judge the model step aside: an error found by a
        check that gates them (the data and architecture audits)."""
        codes = dict.fromkeys(
            f.code for f in self.findings if f.severity == "error" and f.check in self.gates
        )
        return f"{', '.join(codes)} must be fixed first" if codes else None

    def untrainable(self) -> str | None:
        """`blocked`, or a model with nothing to train."""
        if reason := self.blocked():
            return reason
        if not any(p.requires_grad for p in self.model.parameters()):
            return "the model has no trainable parameters"
        return None

    def check_loss(self) -> None:
        """The loss must run on the model's output and return a scalar: a UsageError (bad
        input, not a finding) otherwise."""
        output, y = self.trace.output, self.batch_y
        try:
            loss = self.task.loss(output, y)
        except Exception as e:
            raise UsageError(
                f"the loss {self.task.name} fails on the model's output (shape "
                f"{tuple(output.shape)}) and the targets (shape {tuple(y.shape)}, {y.dtype}): "
                f"{one_line(e)}"
            ) from None
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise UsageError(
                f"the loss must return a scalar, {self.task.name} returned {shape}: use "
                f"reduction='mean'"
            )

    def audit_inputs(self) -> tuple[Inputs, str]:
        """The batch the model audits judge the model on, and a note: standardized inputs
        when the data audit flagged the raw ones, so that one cause (the data) gives one
        finding, not five; the data's measurement records which. Only plain float tensors
        are standardized: ids are indices, and a tuple or dict is passed as given."""
        if self._audit_inputs is None:
            batch, note = self.batch, ""
            flagged = self.raised("DATA_NOT_CENTERED", "DATA_NOT_SCALED", severity="warning")
            plain = isinstance(batch, Tensor) and isinstance(self.x, Tensor)
            if flagged and plain and not integer_inputs(batch):
                from babysit.data.preprocess import Standardize

                fitted = Standardize().fit(self.x.cpu())
                batch = fitted.transform(batch.cpu()).to(batch.device)
                note = "on standardized inputs, since the raw ones are flagged"
            data = self.measurements.get("data")
            if data is not None:
                data["model_audits_on"] = "standardized inputs" if note else "the inputs as given"
            self._audit_inputs = (batch, note)
        return self._audit_inputs


class Check(ABC):
    """One check. Subclasses set the class attributes and write `run`; `skip` and `describe`
    have defaults. `key` names its measurement (report.json's `measurements[key]`) and is
    recorded as each finding's `check`; `row` is the key of the "what was checked" row that
    shows its findings (its own when it has a `title`)."""

    name: ClassVar[str]  # the step's name: progress, timings, CHECK_FAILED and CHECK_SKIPPED
    key: ClassVar[str]
    title: ClassVar[str | None] = None  # the row's title; None: no row of its own
    row: ClassVar[str | None] = None  # the row it reports in, when not its own
    codes: ClassVar[dict[str, str]] = {}  # code -> severity ("warning or info", ...)
    gate: ClassVar[bool] = False  # its errors make the checks that train the model step aside
    section: ClassVar[str | None] = None  # the HTML section its figures go in
    figures: ClassVar[tuple[Figure, ...]] = ()
    needs: ClassVar[str | None] = None  # the measurement's field without which there is no row

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [code for code in cls.codes if code not in CODES]
        if unknown:
            raise TypeError(f"{cls.__name__} raises {unknown}: add them to CODES first")
        if cls.needs is not None and cls.reads is Check.reads:
            raise TypeError(f"{cls.__name__} has a row (needs={cls.needs!r}): define reads")

    @property
    def row_key(self) -> str:
        return self.row or self.key

    def skip(self, context: Context) -> str | None:
        """Why this check steps aside on this context (None: it runs)."""
        return None

    @abstractmethod
    def run(self, context: Context) -> Found:
        """The findings and the measurement (None: nothing to record)."""

    def describe(self, measurements: dict[str, Any]) -> str | None:
        """What was measured against what is expected, for the report's row (None: no row,
        e.g. the check did not run): `reads` of its measurement, when that has `needs`."""
        measurement = measurements.get(self.key)
        if not measurement or self.needs is None or measurement.get(self.needs) is None:
            return None
        return self.reads(measurement)

    def reads(self, measurement: dict[str, Any]) -> str:
        """The row's text for a measurement that has `needs`; a check that sets `needs`
        must define it (checked when the class is made), so this is never reached."""
        raise TypeError(f"{type(self).__name__} sets needs but not reads")


def fmt(value: Any, spec: str = ".3g") -> str:
    """A number for a report row; "?" when it is missing."""
    return "?" if not isinstance(value, int | float) else format(value, spec)


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def draw(
    data: object, what: str, limit: int, seed: int
) -> tuple[Inputs, Tensor, Tensor, tuple[Inputs, Tensor] | None]:
    """(X, y) for the checks, at most `limit` examples drawn with a seeded permutation
    (`babysit.data.batches.sample`: inputs a tensor, tuple or dict); the drawn examples'
    indices in the data (for a DataLoader, their order in its first batches); and the whole
    (X, y) when it is in memory anyway (TensorDatasets and tensor pairs, read in place;
    other Datasets load only the drawn items), for the audits that should see every
    example."""
    if not isinstance(data, DataLoader) and hasattr(data, "__len__") and len(data) == 0:
        raise UsageError(f"{what} is empty: pass at least one (x, y) example")
    whole = in_memory(data)
    x, y, index = sample(data, limit, seed)
    if isinstance(x, Tensor) and x.is_floating_point() and x.dim() < 2:
        raise UsageError(
            f"{what} inputs must be shaped (N, ...), got shape {tuple(x.shape)}: reshape a "
            f"single feature to (N, 1)"
        )
    if index is None:
        index = torch.arange(len(y))
    return x, y, index, whole
