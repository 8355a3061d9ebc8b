import pytest
from optuna.trial import TrialState, create_trial

from babysit.errors import ConfigError
from babysit.search.pruner import STAGE_ATTR
from babysit.search.space import Float, Narrowing, narrow
from babysit.search.stages import (
    DEFAULT_STAGES,
    Stage,
    check_stages,
    current_stage,
    ranked,
    stage_spaces,
    without_promotion,
)


def _trial(number, stage, state, value=None, lr=None):
    trial = create_trial(
        state=state,
        value=value,
        params={} if lr is None else {"lr": lr},
        distributions={} if lr is None else {"lr": Float(1e-6, 10.0, log=True).distribution()},
        user_attrs={STAGE_ATTR: stage},
    )
    trial.number = number
    return trial


def test_the_default_stages_follow_the_notes_coarse_to_fine_to_long():
    assert [s.epochs for s in DEFAULT_STAGES] == [1, 3, 9, 27]
    assert [s.trials for s in DEFAULT_STAGES] == sorted(
        (s.trials for s in DEFAULT_STAGES), reverse=True
    )
    # successive halving: every later stage continues the best of the one before, and keeps
    # fresh trials that sample the narrowed ranges
    assert DEFAULT_STAGES[0].promote == 0
    assert all(0 < s.promote < s.trials for s in DEFAULT_STAGES[1:])
    assert check_stages(DEFAULT_STAGES) == list(DEFAULT_STAGES)
    assert all(s.promote == 0 for s in without_promotion(DEFAULT_STAGES))


def _cost(stages):
    """Epochs a plan trains in all: a continued trial trains only its stage's extra epochs."""
    total, before = 0, 0
    for stage in stages:
        total += stage.promote * (stage.epochs - before)
        total += (stage.trials - stage.promote) * stage.epochs
        before = stage.epochs
    return total


def test_the_default_stages_follow_their_rule():
    first, second, *later = DEFAULT_STAGES
    # the epochs triple (eta = 3); the second stage keeps a third of the first's trials
    assert all(
        b.epochs == 3 * a.epochs
        for a, b in zip(DEFAULT_STAGES[:-1], DEFAULT_STAGES[1:], strict=True)
    )
    assert second.trials * 3 == first.trials
    # every later stage continues the best half of its trials (the last: 2 of 3), the other
    # half samples the narrowed ranges afresh
    for stage in (second, *later):
        assert stage.promote == -(-stage.trials // 2)
    # within the bench's budget of 150 epochs, and without promotion it would not be
    assert _cost(DEFAULT_STAGES) == 141 <= 150 < _cost(without_promotion(DEFAULT_STAGES))


def test_the_doc_table_of_the_default_stages_matches_them():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "search.md").read_text()
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in doc.splitlines()
        if line.startswith("| ") and line.count("|") == 7 and line[2].isdigit()
    ]
    assert len(rows) == len(DEFAULT_STAGES)
    before = 0
    for row, stage in zip(rows, DEFAULT_STAGES, strict=True):
        trials, epochs, continued, fresh, cost = (row[1], row[2], row[3], row[4], row[5])
        assert (int(trials), int(epochs), int(fresh)) == (
            stage.trials,
            stage.epochs,
            stage.trials - stage.promote,
        )
        expected = f"{stage.promote} " if stage.promote else "-"
        assert continued.startswith(expected)
        fresh_cost = _cost([Stage(stage.trials, epochs=stage.epochs)])
        assert int(cost) == fresh_cost - stage.promote * before
        before = stage.epochs
    assert f"{_cost(DEFAULT_STAGES)} epochs in all" in doc


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"trials": 0, "epochs": 1}, "trials >= 1"),
        ({"trials": 3}, "exactly one budget"),
        ({"trials": 3, "epochs": 1, "steps": 10}, "exactly one budget"),
        ({"trials": 3, "epochs": 0}, "epochs must be an integer >= 1"),
        ({"trials": 3, "epochs": 1.5}, "epochs must be an integer >= 1"),
        ({"trials": 3, "epochs": 1, "pruner": "asha"}, "unknown pruner"),
        ({"trials": 3, "epochs": 1, "budget": 2}, "unknown key 'budget'"),
        ({"epochs": 1}, "needs a number of trials"),
    ],
)
def test_bad_stages_name_the_stage_and_the_problem(table, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_stages([{"trials": 5, "epochs": 1}, table])
    assert str(info.value).startswith("stage 2")


def test_stages_must_be_a_non_empty_list():
    for bad in ([], {"trials": 3}, "coarse"):
        with pytest.raises(ConfigError, match="non-empty list"):
            check_stages(bad)


def test_the_current_stage_is_the_lowest_with_trials_waiting_or_running():
    trials = [
        _trial(0, 0, TrialState.COMPLETE, 0.5, 1e-3),
        _trial(1, 0, TrialState.RUNNING),
        _trial(2, 1, TrialState.WAITING),
    ]
    assert current_stage(trials) == 0
    trials[1] = _trial(1, 0, TrialState.PRUNED)
    assert current_stage(trials) == 1
    trials[2] = _trial(2, 1, TrialState.FAIL)
    assert current_stage(trials) is None


def test_ranked_orders_completed_trials_best_first_and_breaks_ties_by_number():
    trials = [
        _trial(0, 0, TrialState.COMPLETE, 0.7, 1e-3),
        _trial(1, 0, TrialState.COMPLETE, 0.9, 1e-2),
        _trial(2, 0, TrialState.PRUNED),
        _trial(3, 0, TrialState.COMPLETE, 0.9, 1e-1),
        _trial(4, 1, TrialState.COMPLETE, 0.99, 1e-1),
    ]
    assert [t.number for t in ranked(trials, 0)] == [1, 3, 0]
    assert [t.number for t in ranked(trials, 0, maximize=False)] == [0, 1, 3]


def test_stage_spaces_chain_the_narrowing_stage_by_stage():
    space = {"lr": Float(1e-6, 10.0, log=True)}
    trials = [
        _trial(i, 0, TrialState.COMPLETE, v, lr)
        for i, (v, lr) in enumerate(
            [(0.9, 1e-2), (0.8, 3e-2), (0.7, 1e-3), (0.1, 1e-6), (0.2, 5.0)]
        )
    ]
    trials += [
        _trial(10 + i, 1, TrialState.COMPLETE, v, lr)
        for i, (v, lr) in enumerate([(0.95, 2e-2), (0.93, 1e-2), (0.9, 5e-3)])
    ]
    spaces, warnings = stage_spaces(space, trials, 2, Narrowing())
    expected_1, _ = narrow(space, space, [{"lr": lr} for lr in (1e-2, 3e-2, 1e-3, 5.0, 1e-6)])
    expected_2, _ = narrow(expected_1, space, [{"lr": lr} for lr in (2e-2, 1e-2, 5e-3)])
    assert spaces == [space, expected_1, expected_2]
    assert len(warnings) == 3 and warnings[2] == []  # stage 3 has no trial yet


def test_a_stage_budget_reads_as_words():
    assert Stage(3, epochs=1).budget == "1 epoch"
    assert Stage(3, epochs=5).budget == "5 epochs"
    assert Stage(3, steps=200).budget == "200 steps"
