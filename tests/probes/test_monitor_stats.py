"""The sync-free statistics the Monitor takes inside a training step."""

import numpy as np
import pytest
import torch

from babysit.probes import dead_fraction, histogram_between


def test_histogram_between_counts_like_torch_histc_and_numpy():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    low, high = -2.5, 3.0
    counts = histogram_between(x, torch.tensor(low), torch.tensor(high), bins=40)
    torch.testing.assert_close(counts, torch.histc(x, bins=40, min=low, max=high))
    inside = x[(x >= low) & (x <= high)].numpy()
    reference, _ = np.histogram(inside, bins=40, range=(low, high))
    assert counts.tolist() == reference.tolist()


def test_histogram_between_drops_nan_inf_and_values_out_of_range_and_keeps_the_top_edge():
    x = torch.tensor([0.0, 0.5, 1.0, float("nan"), float("inf"), -float("inf"), 1.5, -0.1])
    counts = histogram_between(x, torch.tensor(0.0), torch.tensor(1.0), bins=2)
    assert counts.tolist() == [1.0, 2.0]  # 0 | 0.5 and 1.0 (the top edge is in the last bin)


def _dead_by_loops(x):
    """A unit is dead when it is <= 0 for every example and position (reference loop)."""
    units = x.shape[1] if x.dim() > 1 else 1
    dead = 0
    for u in range(units):
        values = x[:, u] if x.dim() > 1 else x
        dead += bool((values <= 0).all())
    return dead / units


@pytest.mark.parametrize("shape", [(64, 30), (8, 6, 5, 5), (4, 3, 7), (50,)])
def test_dead_fraction_matches_a_per_unit_loop(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(shape, generator=g) - 1.5)  # many units all-zero
    if len(shape) > 1:
        x[:, 0] = 0.0
        x[0, 1] = 1.0
    assert dead_fraction(x).item() == pytest.approx(_dead_by_loops(x))


def test_a_unit_that_saw_nan_is_not_dead():
    x = torch.zeros(4, 3)
    x[2, 1] = float("nan")
    assert dead_fraction(x).item() == pytest.approx(2 / 3)
