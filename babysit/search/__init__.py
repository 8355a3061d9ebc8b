"""Coarse-to-fine random search on Optuna: stages that narrow the ranges around their best
trials, the lecture's 3x loss abort as a pruner, and boundary warnings. See docs/search.md.

    from babysit.search import Stage, search
    result = search(objective, {"lr": (1e-6, 10), "weight_decay": (1e-6, 1)},
                    [Stage(40, epochs=1), Stage(12, epochs=5)], storage="sqlite:///study.db")
"""

import sys
import types

from babysit.search.pruner import LossRatioPruner, StagePruner
from babysit.search.space import BoundaryWarning, Categorical, Float, Int, Narrowing
from babysit.search.stages import DEFAULT_STAGES, Stage
from babysit.search.study import SearchResult, load_result, search
from babysit.search.trial import Trial

__all__ = [
    "DEFAULT_STAGES",
    "BoundaryWarning",
    "Categorical",
    "Float",
    "Int",
    "LossRatioPruner",
    "Narrowing",
    "SearchResult",
    "Stage",
    "StagePruner",
    "Trial",
    "load_result",
    "search",
]


class _CallableModule(types.ModuleType):
    """`bs.search(...)` is the public entry point (babysit/__init__.py exports it lazily), but
    importing anything from this package makes Python bind the attribute `babysit.search` to
    the package itself. Calling the package therefore calls `search`, so that `bs.search(...)`
    works in either case."""

    def __call__(self, *args, **kwargs) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
