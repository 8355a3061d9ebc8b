"""Random sampling (Bergstra & Bengio, JMLR 2012) that depends only on the seed and the trial.

Optuna's RandomSampler draws from one generator per process: two workers started with the same
seed would sample the same points, and a resumed search would repeat the first trials' points.
Here each parameter of each trial gets its own generator, seeded from (seed, trial number,
parameter name), and Optuna's RandomSampler does the drawing (log scale, integers, choices).
So trial #17 samples the same values whichever worker runs it, and whenever.

A categorical parameter keeps its full list of choices in the study (Optuna requires the same
choices for every trial); after narrowing, `restrict` tells the sampler which of them a trial
may draw from.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["StageSampler"]


class StageSampler(BaseSampler):
    """Independent random sampling, reproducible per (seed, trial number, parameter)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._local = threading.local()

    def restrict(self, choices: Mapping[str, Sequence[Any]] | None) -> None:
        """Limit the next samples of this thread's trial to these categorical values."""
        self._local.choices = dict(choices or {})

    def _generator_seed(self, trial_number: int, name: str) -> int:
        entropy = [self.seed & 0xFFFFFFFF, trial_number, zlib.crc32(name.encode())]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        seed = self._generator_seed(trial.number, param_name)
        allowed = getattr(self._local, "choices", {}).get(param_name)
        if isinstance(param_distribution, CategoricalDistribution) and allowed:
            kept = [c for c in param_distribution.choices if c in allowed]
            index = int(np.random.default_rng(seed).integers(len(kept)))
            return kept[index]
        return RandomSampler(seed=seed).sample_independent(
            study, trial, param_name, param_distribution
        )
