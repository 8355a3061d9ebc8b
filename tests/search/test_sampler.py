import math
from types import SimpleNamespace

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy import stats

from babysit.search.sampler import StageSampler

LR = FloatDistribution(1e-6, 10.0, log=True)


def _draw(sampler, number, name, distribution):
    return sampler.sample_independent(None, SimpleNamespace(number=number), name, distribution)


def test_log_uniform_lr_is_uniform_in_log10_space():
    """The notes' lr = 10 ** uniform(-6, 1): a Kolmogorov-Smirnov test against scipy's
    uniform distribution on [-6, 1]."""
    sampler = StageSampler(seed=0)
    exponents = [math.log10(_draw(sampler, n, "lr", LR)) for n in range(2000)]
    assert min(exponents) >= -6 and max(exponents) <= 1
    assert stats.kstest(exponents, stats.uniform(loc=-6, scale=7).cdf).pvalue > 0.01
    # and it is not uniform on the linear scale (half the mass would be above 5)
    assert np.mean(np.power(10.0, exponents) > 5) < 0.1


def test_a_trial_gets_the_same_values_whoever_samples_it_and_in_any_order():
    a, b = StageSampler(seed=3), StageSampler(seed=3)
    forward = [_draw(a, n, "lr", LR) for n in range(20)]
    backward = [_draw(b, n, "lr", LR) for n in reversed(range(20))][::-1]
    assert forward == backward
    assert len(set(forward)) == 20
    assert _draw(StageSampler(seed=4), 0, "lr", LR) != forward[0]
    assert _draw(a, 0, "weight_decay", LR) != forward[0]  # each parameter its own stream


def test_integer_ranges_stay_integers_within_bounds():
    sampler = StageSampler(seed=0)
    widths = [_draw(sampler, n, "width", IntDistribution(16, 512, log=True)) for n in range(300)]
    assert all(isinstance(w, int) and 16 <= w <= 512 for w in widths)
    assert np.median(widths) < (16 + 512) / 2  # log scale: the median is near sqrt(16 * 512)


@pytest.mark.parametrize("kept", [("relu",), ("tanh", "elu")])
def test_restricted_categoricals_draw_only_the_kept_values(kept):
    sampler = StageSampler(seed=0)
    choices = CategoricalDistribution(("relu", "tanh", "sigmoid", "elu"))
    sampler.restrict({"activation": kept})
    drawn = {_draw(sampler, n, "activation", choices) for n in range(100)}
    assert drawn == set(kept)
    sampler.restrict(None)
    assert {_draw(sampler, n, "activation", choices) for n in range(100)} == set(choices.choices)
