"""The lab's experiments, one module each: the module's name is the experiment's name.

Every module here is found by scanning this package (no list to keep in step): a new file
`NAME.py` with a docstring, TITLE, ORDER, SETTINGS, `run(setup)` and `figures(data)` is a new
experiment of `babysit lab` (see `babysit.lab.base.Experiment.from_module`).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from babysit.lab.base import Experiment

__all__ = ["discover"]


def discover(package: ModuleType | str = __name__) -> dict[str, Experiment]:
    """Name -> Experiment for every public module of `package`, ordered by ORDER, then name."""
    if isinstance(package, str):
        package = importlib.import_module(package)
    experiments = [
        Experiment.from_module(importlib.import_module(f"{package.__name__}.{info.name}"))
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_") and not info.ispkg
    ]
    experiments.sort(key=lambda e: (e.order, e.name))
    return {e.name: e for e in experiments}
