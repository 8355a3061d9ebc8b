"""Probes: pure measurement of what happens inside a network (no decisions, no plotting)."""

from babysit.probes import stats as _stats
from babysit.probes.hooks import Hooks, preserved, select_layers
from babysit.probes.stats import *  # noqa: F403  (the statistics, as listed in stats.__all__)

__all__ = ["Hooks", "preserved", "select_layers", *_stats.__all__]
