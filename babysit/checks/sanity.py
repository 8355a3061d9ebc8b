"""The CS231n sanity checks before a real training run: the initial loss, the effect of
regularization, overfitting a tiny subset, and (ours) whether the labels can be learnt at all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from babysit.checks.findings import Finding
from babysit.checks.runs import (
    Measure,
    linear_baseline,
    measure,
    recalibrate_batchnorm,
    train_copy,
)
from babysit.checks.task import Task, accuracy, chance_accuracy, class_labels_of
from babysit.probes import preserved

__all__ = [
    "INIT_LOSS_RATIO_MAX",
    "LEARNABLE_Z",
    "OVERFIT_EXAMPLES",
    "OVERFIT_LOSS_FRACTION",
    "REG_MIN_RISE",
    "check_initial_loss",
    "check_learnable",
    "check_overfit",
    "check_regularization",
]

# --- initial loss -------------------------------------------------------------------------
# CS231n notes (Part 3): with small weights the first loss of a C-class softmax is ln(C)
# (2.302 for 10 classes); our reference is the loss of an uninformed output (zero logits),
# which is ln(C) for cross-entropy, ln(2) for BCE. Flagged when the first loss is more than
# this factor above (or below) it. Measured on the calibration grid: healthy MLPs and CNNs
# 1.00-1.35x (He's last layer gives logits of std ~0.7), PCA-whitened inputs 1.5x, a He CNN
# with max-pooling on 3x16x16 inputs 1.8x; faulty: a last layer 20x too large 14x, N(0, 1)
# init 6x to 1e4x, raw 0..16 digits into a He MLP 4-6x.
INIT_LOSS_RATIO_MAX = 2.5
# Regression (MSE, L1, Huber) has no ln(C): there we compare the outputs' rms at init with the
# targets' rms. Outputs more than this many times larger than the targets are flagged (our
# choice: MSE at init is then > 26x that of predicting 0). Measured: He MLPs give 0.5-2.2x
# (MSE on one-hot targets 2.2x), a last layer 20x too large 44x.
OUTPUT_SCALE_MAX = 5.0

# --- overfit a tiny subset ------------------------------------------------------------------
# CS231n notes (Part 3): "take a tiny piece of data (e.g. 20 examples), turn off
# regularization, and make sure that you can achieve zero cost".
OVERFIT_EXAMPLES = 20
# Adam learning rates tried in turn (Adam at 1e-3 fits a tiny batch in a few hundred steps
# for every healthy set-up of our grid; the others cover nets that want a larger or smaller
# step), each for at most `steps` full-batch steps.
OVERFIT_LRS = (1e-3, 1e-2, 1e-4)
# "Zero cost", made a number: the loss must fall below its floor plus this fraction of its
# way down from the first loss, with 100% training accuracy. Measured: healthy set-ups reach
# < 2% of the initial loss; softmax before cross-entropy stalls at ~60%, a clamped output
# at 30-50%, a frozen net at 100%.
OVERFIT_LOSS_FRACTION = 0.1
OVERFIT_CHECK_EVERY = 10
# Findings of the init and architecture audits that slow fitting down without being a bug;
# with one of them, a run that got the loss below this fraction of its way down is reported
# as a warning (fits too slowly) instead of an error (cannot fit). Measured: a 6-layer
# sigmoid stack reaches 0.14 of its initial loss in 300 steps, 8 tanh layers at 0.01 * randn
# 0.42; a softmax before cross-entropy stalls at 0.64, a frozen model at 1.0.
SLOW_FITTING_CAUSES = (
    "INIT_VANISHING",
    "INIT_EXPLODING",
    "INIT_SATURATED",
    "DEAD_UNITS",
    "SIGMOID_HIDDEN",
)
OVERFIT_PROGRESS = 0.5

# --- can the labels be learnt at all --------------------------------------------------------
# A copy of the model trained on part of the data, and a linear classifier, are scored on a
# held-out part; labels that do not follow the inputs (shuffled apart from them) leave both
# at chance. "At chance" = no more than LEARNABLE_Z binomial standard errors above the
# majority-class rate. Measured on digits: shuffled labels 0.08-0.11 held-out for MLPs and
# CNNs, 0.08 linear (chance 0.11-0.12, allowed up to 0.16-0.17); true labels 0.89-0.98
# (model), 0.93 (linear); a saturated tanh net 0.17 (model) but 0.93 (linear), so the labels
# are not blamed.
LEARNABLE_Z = 3.0
LEARNABLE_MIN_EXAMPLES = 200
LEARNABLE_HELD_OUT = 0.25
LEARNABLE_LR = 1e-3
LEARNABLE_MAX_FIT = 2048
# "Worse than a linear classifier": the copy's held-out accuracy covers less than this share
# of the way from chance to the ridge classifier's, on the same split. Measured on digits:
# healthy MLPs and CNNs 0.89-0.98 against 0.93-0.95 linear (over 90% of the way); a
# width-4 ResNet-18 after only 60 steps 0.59 against 0.92 (59%, slow but learning); faulty:
# a saturated tanh net 0.17 against 0.93 (7%), a ResNet-18 scored with stale BatchNorm
# statistics 0.07-0.13 against 0.92-1.00 (below chance). Allowed LEARNABLE_Z standard errors
# below that: a small CNN on hard synthetic data (linear is the right model there) scored
# 0.21 against 0.33 linear, 0.02 short of the half-way mark.
LEARNABLE_LINEAR_SHARE = 0.5

# --- regularization -----------------------------------------------------------------------
# CS231n notes: "crank up the regularization strength: the loss should go up". Weight decay
# is set so that, alone, it would shrink the weights by e^-REG_SHRINK over the run.
REG_SHRINK = 2.0
REG_LR = 1e-3
# The fitted loss with decay must end at least this fraction of the uninformed loss (ln C)
# above the fitted loss without, or this many times higher. Measured on the grid: healthy
# set-ups rise by 0.1-1.0 of ln C; a 10x500 tanh net, whose capacity fits 20 examples even
# with shrunken weights, by 0.013 of ln C but 1800x (1.7e-5 -> 0.031); weight-normalized
# logits with a fixed gain (decay cannot change the function): the loss falls, 0.62 -> 0.06.
REG_MIN_RISE = 0.02
REG_MIN_RATIO = 1.5
# The comparison needs a run without decay that fitted: its loss below this fraction of the
# uninformed loss; otherwise the check is skipped (a model that cannot fit says nothing
# about regularization).
REG_FITTED = 0.5


# ==========================================================================================
# Initial loss
# ==========================================================================================


def check_initial_loss(
    model: nn.Module, x: Tensor, y: Tensor, task: Task, input_note: str = ""
) -> tuple[list[Finding], dict[str, Any]]:
    """The first loss (training mode, no update) against the loss of an uninformed output:
    ln(C) for C-class cross-entropy."""
    with preserved(model), torch.no_grad():
        model.train()
        output = model(x)
        loss = float(task.loss(output, y))
        reference_output = task.uninformed_output(output)
        expected = float(task.loss(reference_output, y)) if reference_output is not None else None
    classes = output.shape[1] if output.dim() > 1 else 1
    spread = float(output.float().std(dim=1).mean()) if output.dim() > 1 and classes > 1 else None
    measurement = {"loss": loss, "expected": expected, "classes": classes, "logit_std": spread}
    if task.kind == "regression" and y.is_floating_point():
        measurement["output_rms"] = float(output.float().square().mean().sqrt())
        measurement["target_rms"] = float(y.float().square().mean().sqrt())
    note = f" ({input_note})" if input_note else ""
    if not math.isfinite(loss):
        return [
            Finding(
                "NAN_LOSS",
                "error",
                f"the loss is {loss} at init on finite inputs{note}: the model or the loss "
                f"computes NaN/inf before any training",
                "look for log of 0, division by 0 or sqrt of a negative number in forward or "
                "in the loss, and for layers whose outputs overflow",
                measurement,
            )
        ], measurement
    if expected is None or not math.isfinite(expected) or expected <= 0:
        measurement["skipped"] = f"no reference initial loss for {task.name}"
        return [], measurement
    ratio = loss / expected
    measurement["ratio"] = ratio
    regression = task.kind == "regression"
    if regression:
        scale = measurement.get("output_rms", 0.0) / max(measurement.get("target_rms", 0.0), 1e-12)
        measurement["output_scale"] = scale
        too_high, too_low, limit = scale > OUTPUT_SCALE_MAX, False, OUTPUT_SCALE_MAX
    else:
        limit = INIT_LOSS_RATIO_MAX
        too_high, too_low = ratio > limit, ratio < 1 / limit
    if not (too_high or too_low):
        return [], measurement
    if task.kind == "cross_entropy" and not (y.is_floating_point()):
        reference = f"ln({classes}) = {expected:.3f} for {classes} classes"
    elif task.kind in ("bce", "bce_logits"):
        reference = f"ln(2) = {expected:.3f} for BCE"
    else:
        reference = f"{expected:.3f}, the loss of an uninformed output"
    if regression:
        return [
            Finding(
                "INIT_LOSS_MISMATCH",
                "warning",
                f"the outputs at init are {measurement['output_scale']:.3g}x larger than the "
                f"targets (rms {measurement['output_rms']:.3g} vs {measurement['target_rms']:.3g}"
                f", limit {OUTPUT_SCALE_MAX:g}x){note}: the first loss is {loss:.3g}, "
                f"{ratio:.3g}x that of predicting 0",
                "scale the last layer's weights down at init (e.g. std 0.01), or standardize "
                "the targets",
                {**measurement, "limit": OUTPUT_SCALE_MAX},
            )
        ], measurement
    if too_high:
        cause = (
            f"the outputs are too large at init (std across classes {spread:.3g})"
            if spread is not None
            else "the outputs are too large at init"
        )
        fix = (
            "scale the last layer's weights down at init (e.g. std 0.01, or "
            "torch.nn.init.zeros_ on its bias and a small normal on its weight); check that "
            "the inputs are preprocessed and that the loss averages over the batch"
        )
    else:
        cause = "the loss starts below what an uninformed model can reach"
        fix = "check the loss function and its inputs (targets and outputs swapped? reduction?)"
    return [
        Finding(
            "INIT_LOSS_MISMATCH",
            "warning",
            f"initial loss {loss:.3f} is {ratio:.2f}x the expected {reference}{note} "
            f"(limit {limit:g}x): {cause}",
            fix,
            {**measurement, "limit": limit},
            None,
        )
    ], measurement


# ==========================================================================================
# Overfit a tiny subset
# ==========================================================================================


def _frozen(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def _fitted(loss: float, acc: float | None, first: float, floor: float) -> bool:
    if not math.isfinite(loss):
        return False
    close = loss <= floor + OVERFIT_LOSS_FRACTION * max(first - floor, 0.0)
    return close and (acc is None or acc >= 1.0)


def check_overfit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    seed: int = 0,
    hints: tuple[str, ...] = (),
) -> tuple[list[Finding], dict[str, Any]]:
    """Train copies of the model on ~20 examples with regularization off (no dropout, no
    weight decay), full batch, Adam at a few learning rates: it must reach 100% training
    accuracy and a loss near its floor. `hints` name earlier findings that would explain a
    failure."""
    x, y = x[:OVERFIT_EXAMPLES], y[:OVERFIT_EXAMPLES]
    if not any(p.requires_grad for p in model.parameters()):
        return [
            Finding(
                "CANNOT_OVERFIT",
                "error",
                "the model has no trainable parameters (every parameter has "
                "requires_grad=False): nothing can be learnt",
                "set requires_grad=True on the parameters to train (model.requires_grad_())",
                {"frozen": _frozen(model)},
            )
        ], {"frozen": _frozen(model)}
    with preserved(model), torch.no_grad():
        output = model(x)
    floor = task.loss_floor(output, y)
    runs = []
    reached = False
    for lr in OVERFIT_LRS:
        first: list[float] = []

        def done(loss: float, acc: float | None, first=first) -> bool:
            if not first:
                first.append(loss)
            return _fitted(loss, acc, first[0], floor)

        watch = Measure(x, y, task, OVERFIT_CHECK_EVERY, done, train_mode=True)
        _, history = train_copy(
            model,
            x,
            y,
            task,
            steps=steps,
            lr=lr,
            optimizer="adam",
            batch_size=len(x),
            seed=seed,
            callbacks=[watch],
            dropout=False,
        )
        runs.append(
            {
                "lr": lr,
                "step_loss": history.step_loss,
                "checks": [list(r) for r in watch.records],
                "reached": watch.reached,
            }
        )
        if watch.reached:
            reached = True
            break
    best = min(runs, key=lambda r: r["checks"][-1][1] if r["checks"] else math.inf)
    step, loss, acc = best["checks"][-1]
    first_loss = best["checks"][0][1]
    measurement = {
        "examples": len(x),
        "optimizer": "adam",
        "floor": floor,
        "runs": runs,
        "reached": reached,
        "final_loss": loss,
        "final_accuracy": acc,
        "initial_loss": first_loss,
    }
    if reached:
        return [], measurement
    frozen = _frozen(model)
    causes = [
        "softmax or sigmoid applied before a loss that applies it again",
        "a frozen, detached or clamped layer",
        "labels misaligned with the inputs",
        "targets the loss cannot reach",
    ]
    if frozen:
        causes.insert(0, f"{len(frozen)} frozen parameter(s) such as {frozen[0]}")
    acc_text = f"training accuracy {acc:.0%} and " if acc is not None else ""
    # A set-up whose init/architecture findings explain slow fitting, and that still made
    # progress, fits badly rather than not at all: a warning that points at those findings.
    slow = [h for h in hints if h in SLOW_FITTING_CAUSES]
    progress = math.isfinite(loss) and loss - floor < OVERFIT_PROGRESS * max(first_loss - floor, 0)
    severity = "warning" if slow and progress else "error"
    return [
        Finding(
            "CANNOT_OVERFIT",
            severity,
            f"the model cannot overfit {len(x)} training examples with regularization off"
            + (f" in time (slowed by {', '.join(slow)})" if severity == "warning" else "")
            + ": "
            f"after up to {steps} full-batch Adam steps at lr "
            f"{', '.join(format(r['lr'], 'g') for r in runs)}, the best run has {acc_text}loss "
            f"{loss:.3g} (from {first_loss:.3g}; needs 100% and < "
            f"{floor + OVERFIT_LOSS_FRACTION * max(first_loss - floor, 0):.3g})",
            (f"fix {', '.join(hints)} first (above); " if hints else "")
            + "a healthy model memorises 20 examples (CS231n); "
            + ("otherwise " if hints else "")
            + "look for: "
            + "; ".join(causes),
            {
                "final_loss": loss,
                "final_accuracy": acc,
                "initial_loss": first_loss,
                "floor": floor,
                "steps": step,
            },
        )
    ], measurement


# ==========================================================================================
# Can the labels be learnt at all
# ==========================================================================================


def check_learnable(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
) -> tuple[list[Finding], dict[str, Any]]:
    """Can the labels be predicted from the inputs at all? A copy of the model trained on
    part of the data, and a linear reference model, are scored on a held-out part: when both
    stay at chance, the labels do not follow the inputs (shuffled or misaligned). The linear
    model keeps a weak or broken network from being blamed on the labels, and the network
    keeps labels that only a nonlinear model can read from being called unlearnable."""
    n = len(x)
    held = min(int(n * LEARNABLE_HELD_OUT), 512)
    if n < LEARNABLE_MIN_EXAMPLES or held < 50:
        return [], {"skipped": f"needs at least {LEARNABLE_MIN_EXAMPLES} examples, got {n}"}
    x_fit, y_fit = x[held:][:LEARNABLE_MAX_FIT], y[held:][:LEARNABLE_MAX_FIT]
    x_held, y_held = x[:held], y[:held]
    net, history = train_copy(
        model,
        x_fit,
        y_fit,
        task,
        steps=steps,
        lr=LEARNABLE_LR,
        optimizer="adam",
        batch_size=batch_size,
        seed=seed,
    )
    x_seen, y_seen = x_fit[: max(held, 256)], y_fit[: max(held, 256)]
    # Scored in eval mode, as it will be used, with BatchNorm statistics of these weights.
    recalibrated = recalibrate_batchnorm(net, x_fit, batch_size)
    net.eval()
    with torch.no_grad():
        out_held, out_seen, out_fit = net(x_held), net(x_seen), net(x_fit[:1])
    labels_held = class_labels_of(out_held, y_held, task)
    labels_seen = class_labels_of(out_seen, y_seen, task)
    labels_fit = class_labels_of(out_fit.expand(len(x_fit), *out_fit.shape[1:]), y_fit, task)
    if labels_held is None or labels_seen is None or labels_fit is None:
        return [], {"skipped": "the targets are not class labels"}
    if labels_held.dim() != 1:
        return [], {"skipped": "per-position labels (e.g. segmentation)"}
    held_acc, train_acc = accuracy(out_held, y_held, task), accuracy(out_seen, y_seen, task)
    chance = chance_accuracy(labels_held)
    margin = LEARNABLE_Z * math.sqrt(max(chance * (1 - chance), 1e-12) / len(x_held))
    measurement: dict[str, Any] = {
        "train_examples": len(x_fit),
        "held_out_examples": held,
        "steps": len(history.step_loss),
        "train_accuracy": train_acc,
        "held_out_accuracy": held_acc,
        "chance": chance,
        "margin": margin,
        "batchnorm_recalibrated": recalibrated,
    }
    if held_acc is None or train_acc is None:
        return [], measurement
    if len(torch.unique(labels_fit)) > 1:
        linear_acc = linear_baseline(x_fit, labels_fit, x_held, labels_held)
        measurement["linear_held_out_accuracy"] = linear_acc
        if linear_acc > chance + margin:  # the inputs do predict the labels
            found = _below_linear(held_acc, train_acc, linear_acc, chance, margin, len(x_fit), held)
            return found, measurement
    if held_acc > chance + margin:
        return [], measurement
    return [
        Finding(
            "LABELS_UNLEARNABLE",
            "error",
            f"the labels do not follow the inputs: a copy of the model trained on "
            f"{len(x_fit)} examples reaches {train_acc:.0%} on them but {held_acc:.1%} on "
            f"{held} held-out ones, and a linear classifier "
            f"{measurement.get('linear_held_out_accuracy', math.nan):.1%}: no better than "
            f"chance ({chance:.1%}, +{margin:.1%} allowed)",
            "check that inputs and labels are shuffled and indexed together (the same "
            "permutation for x and y), and that each label belongs to its input",
            measurement,
        )
    ], measurement


def _below_linear(
    held_acc: float,
    train_acc: float,
    linear_acc: float,
    chance: float,
    margin: float,
    fitted: int,
    held: int,
) -> list[Finding]:
    """WORSE_THAN_LINEAR when the trained copy gets less than LEARNABLE_LINEAR_SHARE of the
    way from chance to a linear classifier's accuracy on the same split, by more than the
    sampling `margin` (LEARNABLE_Z standard errors): the labels can be learnt, and the model
    is what fails."""
    needed = chance + LEARNABLE_LINEAR_SHARE * (linear_acc - chance)
    if held_acc >= needed - margin:
        return []
    memorised = train_acc >= needed + (1 - needed) / 2
    why = (
        f"it fits the examples it saw ({train_acc:.0%}) but not new ones: it memorises "
        f"rather than generalises, or it behaves differently in eval mode (BatchNorm, "
        f"dropout) than in training"
        if memorised
        else f"it does not fit even the examples it saw ({train_acc:.0%}), scored in eval "
        f"mode: it learns too slowly, or behaves differently in eval mode than in training"
    )
    return [
        Finding(
            "WORSE_THAN_LINEAR",
            "warning",
            f"a copy of the model trained on {fitted} examples scores {held_acc:.1%} on {held} "
            f"held-out ones, a linear classifier {linear_acc:.1%} on the same split (chance "
            f"{chance:.1%}; needs half of the way, {needed:.1%}, less {margin:.1%} allowed for "
            f"sampling): {why}",
            "see the init and learning-rate findings; check the model's forward in eval mode "
            "(model.eval()), its normalization layers and its capacity against a linear "
            "baseline; with few examples, a smaller model or more data",
            {
                "held_out_accuracy": held_acc,
                "train_accuracy": train_acc,
                "linear_held_out_accuracy": linear_acc,
                "chance": chance,
                "needed": needed,
                "margin": margin,
            },
        )
    ]


# ==========================================================================================
# Regularization
# ==========================================================================================


def _weight_norm(model: nn.Module) -> float:
    return float(
        torch.sqrt(
            sum((p.detach().float() ** 2).sum() for p in model.parameters() if p.requires_grad)
        )
    )


def check_regularization(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    steps: int,
    seed: int = 0,
) -> tuple[list[Finding], dict[str, Any]]:
    """Fit the tiny subset twice, with and without strong weight decay (AdamW, decoupled,
    so it acts at the same rate whatever the gradients): with it, the fitted loss must end
    higher."""
    x, y = x[:OVERFIT_EXAMPLES], y[:OVERFIT_EXAMPLES]
    decay = REG_SHRINK / (REG_LR * steps)
    with preserved(model), torch.no_grad():
        output = model(x)
        uninformed = task.uninformed_output(output)
        reference = float(task.loss(uninformed, y)) if uninformed is not None else math.nan
    results = {}
    for name, wd in (("plain", 0.0), ("decayed", decay)):
        net, history = train_copy(
            model,
            x,
            y,
            task,
            steps=steps,
            lr=REG_LR,
            optimizer="adamw",
            batch_size=len(x),
            seed=seed,
            weight_decay=wd,
            dropout=False,
        )
        loss, _ = measure(net, x, y, task, train_mode=True)
        results[name] = {
            "loss": loss,
            "weight_norm": _weight_norm(net),
            "first": history.step_loss[0],
        }
    first = results["plain"]["first"]
    plain, decayed = results["plain"]["loss"], results["decayed"]["loss"]
    # The scale of a meaningful rise: the loss of an uninformed output (ln C for C classes),
    # not the first loss, which a bad init can make enormous.
    scale = reference if math.isfinite(reference) and reference > 0 else first
    measurement = {
        "weight_decay": decay,
        "steps": steps,
        "initial_loss": first,
        "scale": scale,
        **results,
    }
    if not (math.isfinite(plain) and math.isfinite(first)) or plain > REG_FITTED * scale:
        measurement["skipped"] = "the run without regularization did not fit the subset"
        return [], measurement
    rise = (decayed - plain) / scale if math.isfinite(decayed) else math.inf
    measurement["rise"] = rise
    if rise >= REG_MIN_RISE or decayed > REG_MIN_RATIO * plain:
        return [], measurement
    shrunk = results["decayed"]["weight_norm"] < 0.9 * results["plain"]["weight_norm"]
    why = (
        "the weights shrank but the loss did not rise: decay cannot change what they compute"
        if shrunk
        else "the weights did not shrink: decay does not reach the parameters that matter"
    )
    return [
        Finding(
            "REG_NO_EFFECT",
            "warning",
            f"strong weight decay ({decay:.3g}) did not raise the fitted loss: {decayed:.3g} "
            f"with it vs {plain:.3g} without (rise {rise:.1%} of {scale:.3g}, needs "
            f"{REG_MIN_RISE:.0%}); {why}",
            "check that the trained parameters are nn.Parameters passed to the optimizer "
            "(not buffers or tensors copied in forward) and that the loss depends on them",
            measurement,
        )
    ], measurement
