"""Coarse-to-fine random search on Optuna: stages that narrow the ranges around their best
trials, the lecture's 3x loss abort as a pruner, and boundary warnings. See docs/search.md.

    import babysit as bs
    from babysit.search import Stage
    result = bs.search(objective, {"lr": (1e-6, 10), "weight_decay": (1e-6, 1)},
                       [Stage(40, epochs=1), Stage(12, epochs=5)])

`bs.search` (the function) is defined in babysit/__init__.py; this package holds its parts.
Its names are imported on first use (PEP 562), so `import babysit` does not import Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "DEFAULT_STAGES": "babysit.search.stages",
    "BoundaryWarning": "babysit.search.space",
    "Categorical": "babysit.search.space",
    "Float": "babysit.search.space",
    "Int": "babysit.search.space",
    "LossRatioPruner": "babysit.search.pruner",
    "Narrowing": "babysit.search.space",
    "SearchResult": "babysit.search.study",
    "SearchStopped": "babysit.search.study",
    "Stage": "babysit.search.stages",
    "StagePruner": "babysit.search.pruner",
    "Trial": "babysit.search.trial",
    "load_result": "babysit.search.study",
    "search": "babysit.search.study",
}
__all__ = [
    "DEFAULT_STAGES",
    "BoundaryWarning",
    "Categorical",
    "Float",
    "Int",
    "LossRatioPruner",
    "Narrowing",
    "SearchResult",
    "SearchStopped",
    "Stage",
    "StagePruner",
    "Trial",
    "load_result",
    "search",
]

if TYPE_CHECKING:  # pragma: no cover
    from babysit.search.pruner import LossRatioPruner, StagePruner
    from babysit.search.space import BoundaryWarning, Categorical, Float, Int, Narrowing
    from babysit.search.stages import DEFAULT_STAGES, Stage
    from babysit.search.study import SearchResult, SearchStopped, load_result, search
    from babysit.search.trial import Trial


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'babysit.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
