"""checks.targets: TARGETS_NOT_SCALED and SHAPE_BROADCAST, measured then decided."""

import pytest
import torch
from torch import nn

from babysit.checks.findings import CODES
from babysit.checks.targets import (
    TARGET_SCALE_MAX,
    check_shape_broadcast,
    check_target_scale,
    check_targets,
    measure_targets,
)
from babysit.checks.task import task_for


def _regression(scale=1.0, shift=0.0, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g) * scale + shift


def test_the_new_codes_are_registered():
    for code in ("TARGETS_NOT_SCALED", "SHAPE_BROADCAST", "PARAMS_NOT_UPDATED"):
        assert code in CODES


def test_targets_times_1000_are_not_scaled():
    output, y = _regression(scale=1000.0)
    found = check_targets(measure_targets(output, y, task_for(nn.MSELoss())))
    assert [f.code for f in found] == ["TARGETS_NOT_SCALED"]
    assert found[0].severity == "warning" and "standardize" in found[0].fix
    assert found[0].evidence["std"] == pytest.approx(float(y.std()), rel=1e-6)


def test_a_large_offset_is_not_scaled_either():
    output, y = _regression(scale=1.0, shift=500.0)
    assert [f.code for f in check_target_scale(measure_targets(output, y, task_for(nn.L1Loss())))]


@pytest.mark.parametrize("scale", [1.0, 3.0, 0.1])
def test_unit_scale_targets_pass(scale):
    output, y = _regression(scale=scale)
    assert check_targets(measure_targets(output, y, task_for(nn.MSELoss()))) == []


def test_the_threshold_is_the_rms():
    output = torch.zeros(4, 1)
    just_over = torch.full((4, 1), TARGET_SCALE_MAX * 1.01)
    just_under = torch.full((4, 1), TARGET_SCALE_MAX * 0.99)
    task = task_for(nn.MSELoss())
    assert check_target_scale(measure_targets(output, just_over, task))
    assert not check_target_scale(measure_targets(output, just_under, task))


def test_class_labels_have_no_target_scale():
    output, y = torch.randn(50, 10), torch.randint(0, 10, (50,)) * 100
    assert "scale" not in measure_targets(output, y, task_for(None))


def test_n_targets_against_n_by_1_outputs_is_a_broadcast_error():
    output, y = _regression()
    task = task_for(nn.MSELoss())
    found = check_targets(measure_targets(output, y[:, 0], task))
    assert [f.code for f in found] == ["SHAPE_BROADCAST"]
    assert found[0].severity == "error"
    assert found[0].evidence["broadcast_shape"] == [200, 200]
    # The independent reference: torch's MSE on these shapes is the (N, N) comparison.
    broadcast = ((output - y[:, 0]) ** 2).mean()
    with pytest.warns(UserWarning):
        assert float(nn.MSELoss()(output, y[:, 0])) == pytest.approx(float(broadcast))


def test_equal_shapes_and_class_labels_never_broadcast():
    output, y = _regression()
    assert check_shape_broadcast(measure_targets(output, y, task_for(nn.MSELoss()))) == []
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert check_shape_broadcast(measure_targets(logits, labels, task_for(None))) == []


def test_bce_on_n_targets_against_n_by_1_is_flagged():
    output = torch.randn(16, 1)
    y = torch.randint(0, 2, (16,)).float()
    found = check_targets(measure_targets(output, y, task_for(nn.BCEWithLogitsLoss())))
    assert [f.code for f in found] == ["SHAPE_BROADCAST"]
