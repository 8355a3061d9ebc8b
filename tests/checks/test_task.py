import functools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from babysit.checks.task import accuracy, chance_accuracy, class_labels_of, task_for


@pytest.mark.parametrize(
    ("loss_fn", "kind"),
    [
        (None, "cross_entropy"),
        (nn.CrossEntropyLoss(), "cross_entropy"),
        (F.cross_entropy, "cross_entropy"),
        (functools.partial(F.cross_entropy, label_smoothing=0.1), "cross_entropy"),
        (nn.NLLLoss(), "nll"),
        (nn.BCEWithLogitsLoss(), "bce_logits"),
        (F.binary_cross_entropy, "bce"),
        (nn.MSELoss(), "regression"),
        (nn.HuberLoss(), "regression"),
        (lambda out, y: (out - y).abs().mean(), "other"),
    ],
)
def test_task_for_recognises_torch_losses(loss_fn, kind):
    assert task_for(loss_fn).kind == kind


def test_partial_keywords_reach_the_task():
    task = task_for(functools.partial(F.cross_entropy, label_smoothing=0.2, ignore_index=3))
    assert task.label_smoothing == 0.2 and task.ignore_index == 3


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_uninformed_cross_entropy_is_ln_c(classes):
    task = task_for(None)
    out = torch.randn(32, classes)
    y = torch.randint(0, classes, (32,))
    assert float(task.loss(task.uninformed_output(out), y)) == pytest.approx(math.log(classes))


def test_uninformed_nll_and_bce_give_the_known_values():
    out, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    nll = task_for(nn.NLLLoss())
    assert float(nll.loss(nll.uninformed_output(out), y)) == pytest.approx(math.log(5))
    for loss in (nn.BCEWithLogitsLoss(), nn.BCELoss()):
        task = task_for(loss)
        target = torch.randint(0, 2, (16, 1)).float()
        out1 = torch.randn(16, 1)
        assert float(task.loss(task.uninformed_output(out1), target)) == pytest.approx(math.log(2))


def test_label_smoothing_floor_is_the_loss_of_the_best_prediction():
    classes, eps = 10, 0.1
    task = task_for(nn.CrossEntropyLoss(label_smoothing=eps))
    y = torch.arange(classes)
    # The best logits reproduce the smoothed target distribution exactly.
    on, off = 1 - eps + eps / classes, eps / classes
    best = torch.full((classes, classes), math.log(off))
    best[y, y] = math.log(on)
    floor = task.loss_floor(best, y)
    assert floor == pytest.approx(float(task.loss(best, y)), rel=1e-5)
    assert task_for(None).loss_floor(best, y) == 0.0


def test_accuracy_reads_class_indices_one_hot_and_binary_targets():
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    ce = task_for(None)
    assert accuracy(out, torch.tensor([0, 1, 1]), ce) == pytest.approx(2 / 3)
    mse = task_for(nn.MSELoss())
    assert accuracy(out, F.one_hot(torch.tensor([0, 1, 0]), 2).float(), mse) == 1.0
    bce = task_for(nn.BCEWithLogitsLoss())
    logits = torch.tensor([[1.0], [-1.0], [0.5]])
    assert accuracy(logits, torch.tensor([[1.0], [0.0], [0.0]]), bce) == pytest.approx(2 / 3)
    assert accuracy(torch.randn(3, 1), torch.randn(3, 1), mse) is None  # regression


def test_accuracy_leaves_out_ignored_labels():
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert accuracy(out, torch.tensor([0, -100]), task_for(None)) == 1.0


def test_chance_is_the_majority_class_rate():
    assert chance_accuracy(torch.tensor([0, 0, 0, 1])) == 0.75
    assert class_labels_of(torch.randn(4, 3), torch.randn(4, 3), task_for(nn.MSELoss())) is None
