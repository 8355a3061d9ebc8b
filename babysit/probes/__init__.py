"""Probes: pure measurement of what happens inside a network (no decisions, no plotting)."""

from babysit.probes.hooks import Hooks, preserved, select_layers
from babysit.probes.stats import (
    HISTOGRAM_BINS,
    LayerStats,
    activation_stats,
    dead_fraction,
    histogram,
    histogram_between,
    moments,
    saturated_fraction,
    update_ratios,
)

__all__ = [
    "HISTOGRAM_BINS",
    "Hooks",
    "LayerStats",
    "activation_stats",
    "dead_fraction",
    "histogram",
    "histogram_between",
    "moments",
    "preserved",
    "saturated_fraction",
    "select_layers",
    "update_ratios",
]
