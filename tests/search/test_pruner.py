import math

import optuna
import pytest
from optuna.pruners import MedianPruner
from optuna.trial import TrialState, create_trial

from babysit.errors import ConfigError
from babysit.search.pruner import (
    PRUNE_REASON,
    STAGE_ATTR,
    LossRatioPruner,
    StagePruner,
    make_pruner,
)
from babysit.train.callbacks import LOSS_ABORT_FACTOR


def test_the_rule_is_the_lectures_three_times_the_first_loss():
    rule = LossRatioPruner()
    assert rule.factor == LOSS_ABORT_FACTOR == 3.0
    assert rule.check(2.0, 6.0) is None  # exactly 3x is not above 3x
    assert "exceeded 3x the initial loss 2" in rule.check(2.0, 6.01)
    assert rule.check(2.0, math.nan) == "loss became nan"
    assert rule.check(2.0, math.inf) == "loss became inf"
    assert rule.check(math.nan, math.nan) == "loss became nan"


def _run(study, losses):
    """Report `losses` one step at a time; return the step at which the trial was pruned."""
    trial = study.ask()
    for step, loss in enumerate(losses, start=1):
        trial.report(loss, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step, study.trials[-1]
    study.tell(trial, losses[-1])
    return None, study.trials[-1]


def test_as_an_optuna_pruner_it_prunes_a_minimized_loss_at_the_step_it_triples():
    study = optuna.create_study(direction="minimize", pruner=LossRatioPruner())
    step, trial = _run(study, [2.3, 2.0, 6.8, 7.0, 8.0])
    assert step == 4
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs[PRUNE_REASON].endswith("at step 4")
    step, trial = _run(study, [2.3, 1.0, float("nan")])
    assert step == 3 and "nan" in trial.user_attrs[PRUNE_REASON]
    step, trial = _run(study, [2.3, 2.0, 1.0])
    assert step is None and trial.state == TrialState.COMPLETE


def test_wrapping_a_median_pruner_changes_none_of_its_decisions_on_healthy_curves():
    curves = [[1.0 - 0.1 * s + 0.02 * i for s in range(6)] for i in range(12)]
    decisions = []
    for pruner in (MedianPruner(), LossRatioPruner(wrapped=MedianPruner())):
        study = optuna.create_study(direction="minimize", pruner=pruner)
        decisions.append([_run(study, curve)[0] for curve in curves])
    assert decisions[0] == decisions[1]
    assert any(step is not None for step in decisions[0])  # the median did prune some


def test_in_a_maximizing_study_the_values_are_not_losses_and_only_the_wrapped_pruner_acts():
    study = optuna.create_study(direction="maximize", pruner=LossRatioPruner())
    step, _ = _run(study, [0.1, 0.5, 0.9])  # accuracy rising 9x is no divergence
    assert step is None


def _finished(stage, values, number):
    return create_trial(
        state=TrialState.COMPLETE,
        value=values[-1],
        intermediate_values=dict(enumerate(values, start=1)),
        user_attrs={STAGE_ATTR: stage},
    )


def test_a_stage_median_compares_only_with_trials_of_the_same_stage():
    # Stage 0 trials are strong, stage 1 trials are weak: a stage-1 trial at 0.5 is above
    # its own stage's median (0.4) though far below stage 0's (0.9).
    def study_with(pruner, stages):
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for number, (stage, value) in enumerate(stages):
            study.add_trial(_finished(stage, [value, value], number))
        return study

    history = [(0, 0.9)] * 6 + [(1, 0.4)] * 6
    staged = study_with(StagePruner([None, MedianPruner(n_startup_trials=5)]), history)
    trial = staged.ask()
    staged._storage.set_trial_user_attr(trial._trial_id, STAGE_ATTR, 1)
    trial.report(0.5, 1)
    # The independent reference: Optuna's MedianPruner on a study of stage-1 trials only.
    reference = study_with(MedianPruner(n_startup_trials=5), [(1, 0.4)] * 6)
    ref_trial = reference.ask()
    ref_trial.report(0.5, 1)
    assert not trial.should_prune()
    assert not ref_trial.should_prune()
    # and with the whole study as yardstick the same trial would have been pruned
    everything = study_with(MedianPruner(n_startup_trials=5), history)
    wide = everything.ask()
    wide.report(0.5, 1)
    assert wide.should_prune()


def test_a_stage_without_a_pruner_never_prunes():
    study = optuna.create_study(direction="maximize", pruner=StagePruner([None]))
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, STAGE_ATTR, 0)
    trial.report(0.0, 1)
    assert not trial.should_prune()


def test_make_pruner_names_and_errors():
    assert make_pruner(None, 5) is None
    assert make_pruner("none", 5) is None
    assert isinstance(make_pruner("median", 5), MedianPruner)
    assert isinstance(make_pruner("hyperband", 9), optuna.pruners.HyperbandPruner)
    with pytest.raises(ConfigError, match="unknown pruner 'asha'"):
        make_pruner("asha", 5)
    with pytest.raises(ConfigError, match="at least 2 epochs"):
        make_pruner("hyperband", 1)
    with pytest.raises(ConfigError, match="> 1"):
        LossRatioPruner(1.0)
