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


# --- per-position tasks (issue 12) ----------------------------------------------------------


def _lm_batch(batch=4, length=7, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, vocab, generator=g), torch.randint(
        0, vocab, (batch, length), generator=g
    )


def test_class_dim_reads_both_per_position_layouts():
    from babysit.checks.task import class_dim

    logits, y = _lm_batch()
    assert class_dim(logits, y) == 2  # (B, T, V), Hugging Face
    assert class_dim(logits.transpose(1, 2), y) == 1  # (B, V, T), torch
    assert class_dim(torch.randn(2, 5, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)) == 1
    assert class_dim(torch.randn(8, 3), torch.zeros(8, dtype=torch.long)) == 1
    assert class_dim(torch.randn(8, 3), torch.zeros(8, 3)) is None  # soft / real targets
    assert class_dim(torch.randn(8, 3, 5), torch.zeros(8, 4, dtype=torch.long)) is None


def test_default_loss_takes_b_t_v_logits_as_torch_takes_b_v_t():
    logits, y = _lm_batch()
    task = task_for(None)
    reference = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    assert float(task.loss(logits, y)) == pytest.approx(float(reference), rel=1e-6)
    assert float(task.loss(logits.transpose(1, 2), y)) == pytest.approx(float(reference), rel=1e-6)
    assert task.name == "CrossEntropyLoss" and task.kind == "cross_entropy"
    with pytest.raises(RuntimeError):  # torch's own loss does not: only the default adapts
        nn.CrossEntropyLoss()(logits, y)


@pytest.mark.parametrize("layout", ["btv", "bvt"])
def test_expected_initial_loss_is_ln_v_per_position_without_ignored_ones(layout):
    logits, y = _lm_batch(vocab=100)
    y[:, :3] = -100  # padding, ignored
    out = logits if layout == "btv" else logits.transpose(1, 2)
    task = task_for(None)
    assert task.classes(out, y) == 100
    assert task.per_position(out, y)
    assert task.expected_initial_loss(out, y) == pytest.approx(math.log(100), rel=1e-6)


def test_segmentation_expected_loss_and_classes():
    out = torch.randn(2, 5, 6, 6)
    y = torch.randint(0, 5, (2, 6, 6))
    task = task_for(nn.CrossEntropyLoss())
    assert task.classes(out, y) == 5 and task.per_position(out, y)
    assert task.expected_initial_loss(out, y) == pytest.approx(math.log(5), rel=1e-6)
    nll = task_for(nn.NLLLoss())
    assert nll.expected_initial_loss(out, y) == pytest.approx(math.log(5), rel=1e-6)


def test_accuracy_per_position_in_the_hugging_face_layout():
    logits, y = _lm_batch()
    y[0, 0] = -100
    task = task_for(None)
    predicted = logits.argmax(-1)
    keep = y != -100
    expected = float((predicted == y)[keep].float().mean())
    assert accuracy(logits, y, task) == pytest.approx(expected)
    assert accuracy(logits.transpose(1, 2), y, task) == pytest.approx(expected)


def test_class_scores_flattens_positions_and_drops_ignored_ones():
    from babysit.checks.task import class_scores

    logits, y = _lm_batch(batch=2, length=3, vocab=4)
    y[1, 2] = -100
    scores, labels = class_scores(logits, y, task_for(None))
    assert scores.shape == (5, 4) and labels.shape == (5,)
    assert torch.equal(scores[0], logits[0, 0]) and torch.equal(labels, y.reshape(-1)[:5])


def test_accuracy_is_required_per_example_only():
    task = task_for(None)
    logits, y = _lm_batch()
    assert task.accuracy_required(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    assert not task.accuracy_required(logits, y)


def test_achievable_accuracy_of_sequences_that_share_a_prefix():
    from babysit.checks.task import achievable_accuracy

    # Two sequences that agree on their first two tokens and then part: at position 1 the
    # contexts are identical and the next tokens differ, so one of the two must be wrong.
    x = torch.tensor([[1, 2, 3], [1, 2, 4]])
    y = torch.tensor([[2, 3, 9], [2, 4, 9]])
    assert achievable_accuracy(x, y, causal=True) == pytest.approx(5 / 6)
    assert achievable_accuracy(x, y) == 1.0  # non-causal: whole rows differ
    # Per example: duplicated inputs with conflicting labels.
    xs = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [2.0, 2.0]])
    assert achievable_accuracy(xs, torch.tensor([0, 0, 1, 1])) == pytest.approx(3 / 4)
    assert achievable_accuracy(xs, torch.tensor([0, 0, -100, 1])) == 1.0


@pytest.mark.parametrize(
    ("out_shape", "y_shape", "flagged"),
    [((8, 1), (8,), (8, 8)), ((8,), (8, 1), (8, 8)), ((8, 1), (8, 1), None), ((8, 3), (3,), None)],
)
def test_broadcast_shape_names_shapes_that_only_broadcast(out_shape, y_shape, flagged):
    from babysit.checks.task import ShapeBroadcastError, broadcast_shape, check_shapes

    task = task_for(nn.MSELoss())
    out, y = torch.randn(out_shape), torch.randn(y_shape)
    assert broadcast_shape(out, y, task) == flagged
    if flagged:
        with pytest.raises(ShapeBroadcastError, match=r"reshape the targets to \(8"):
            check_shapes(out, y, task)
    assert broadcast_shape(out, y, task_for(None)) is None  # class labels never broadcast


def test_target_scale_matches_numpy():
    import numpy as np

    from babysit.checks.task import target_scale

    y = torch.randn(500, 1, generator=torch.Generator().manual_seed(1)) * 1000 + 30
    scale = target_scale(y)
    values = y.double().numpy().ravel()
    assert scale["std"] == pytest.approx(values.std(ddof=1))
    assert scale["mean"] == pytest.approx(values.mean())
    assert scale["rms"] == pytest.approx(np.sqrt((values**2).mean()))
    assert scale["max_abs"] == pytest.approx(np.abs(values).max())
