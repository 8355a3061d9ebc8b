"""babysit: the CS231n recipe for training neural networks, as software.

    import babysit as bs
    train, val = bs.load_data("digits")
    model = bs.nn.mlp(64, [100, 100], 10, activation="relu", init="he")
    report = bs.checkup(model, train, val_data=val)

The heavy parts (Optuna, matplotlib) are imported on first use, so `import babysit` and the
CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from babysit import nn
from babysit._version import __version__ as __version__

_LAZY = {
    "load_data": "babysit.data.datasets",
    "checkup": "babysit.doctor",
    "Report": "babysit.report.report",
    "Finding": "babysit.checks.findings",
    "Monitor": "babysit.train.monitor",
    "data": "babysit.data",
    "probes": "babysit.probes",
    "train": "babysit.train",
}

__all__ = [
    "Finding",
    "Monitor",
    "Report",
    "checkup",
    "data",
    "load_data",
    "nn",
    "probes",
    "search",
    "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from babysit import data
    from babysit.checks.findings import Finding
    from babysit.data.datasets import load_data
    from babysit.doctor import checkup
    from babysit.report.report import Report
    from babysit.train.monitor import Monitor


# `babysit.search` is both the package of the search's parts (`from babysit.search import
# Stage`) and, as an attribute of `babysit`, the function `bs.search`. Importing the (light)
# package here first, and then binding the name to the function, keeps it the function: Python
# binds a package to its parent's attribute only when it first imports it.
importlib.import_module("babysit.search")


def search(objective, space, stages=None, **options):
    """`bs.search(objective, space, stages, *, storage=None, ...)`: the staged coarse-to-fine
    search, `babysit.search.study.search` (its docstring and docs/search.md say more)."""
    from babysit.search.study import search as staged_search

    return staged_search(objective, space, *(() if stages is None else (stages,)), **options)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'babysit' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"babysit.{name}" else getattr(module, name)
    globals()[name] = value
    return value
