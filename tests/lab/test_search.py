import numpy as np
import pytest

from babysit.lab.experiments.search import _grid_axis, _synthetic


def test_grid_axis_puts_points_at_cell_centres():
    assert _grid_axis(0.0, 1.0) == pytest.approx([1 / 6, 1 / 2, 5 / 6])
    assert _grid_axis(1e-4, 1.0, log=True) == pytest.approx([10**-3.333333, 1e-2, 10**-0.666667])


def test_grid_best_x_is_uniform_within_a_sixth_of_the_optimum():
    # On a product grid the best y is the same in every column, so the grid keeps the x
    # nearest x*: |x - x*| is uniform on [0, 1/6] and its median is exactly 1/12.
    out = _synthetic(40_000, seed=1)
    assert np.median(out["grid"]) == pytest.approx(1 / 12, abs=0.003)
    assert out["grid"].max() <= 1 / 6 + 1e-12
    assert out["distinct_x"] == {"grid": 3, "random": 9}


def test_random_search_gets_closer_than_the_grid_more_often_than_not():
    out = _synthetic(20_000, seed=2)
    assert np.mean(out["random"] < out["grid"]) > 0.5
    assert np.median(out["random"]) < np.median(out["grid"])


def test_tiny_run_has_the_three_parts(tiny, claim):
    result = tiny("search")
    assert len(result.claims) == 3
    assert claim(result, "With 9 trials").passed
    digits = result.data["digits"]
    assert len(digits["grid"][0]["lrs"]) == 9 and len(digits["random"][0]["lrs"]) == 9
    assert len(set(digits["grid"][0]["lrs"])) == 3  # the grid tries 3 learning rates
    stages = result.data["staged"][0]["stages"]
    assert len(stages) == 2
    low, high = stages[1]["range"]
    assert 1e-6 <= low < high <= 10.0 and high / low < 1e7  # narrowed
