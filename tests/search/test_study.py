"""The staged search through its Python API, with objectives that need no training."""

import math

import optuna
import pytest
from optuna.trial import TrialState

from babysit.errors import UsageError
from babysit.search import Stage, search
from babysit.search.space import Narrowing, narrow, parse_space
from babysit.search.stages import ranked
from babysit.search.storage import StudyLock, resolve_storage
from babysit.search.study import STEPS_ATTR, load_result

SPACE = {"lr": (1e-6, 10.0), "weight_decay": (1e-6, 1.0)}


def peaked(trial):
    """A smooth 'accuracy' with its optimum at lr = 1e-2, flat in weight decay."""
    return math.exp(-((math.log10(trial.params["lr"]) + 2) ** 2) / 4)


def rising(trial):
    """Accuracy that keeps improving with lr: the best lies beyond the range."""
    return math.log10(trial.params["lr"]) + 7


def _url(tmp_path, name="study.db"):
    return f"sqlite:///{tmp_path / name}"


def test_each_stage_runs_its_trials_from_the_ranges_narrowed_on_the_stage_before(tmp_path):
    stages = [Stage(12, epochs=1), Stage(6, epochs=2), Stage(3, epochs=3)]
    result = search(peaked, SPACE, stages, storage=_url(tmp_path), study_name="peak")
    trials = result.trials
    assert [s.complete for s in result.stages] == [12, 6, 3]
    by_stage = [[t for t in trials if t.user_attrs["stage"] == i] for i in range(3)]
    for earlier, later in zip(by_stage, by_stage[1:], strict=False):
        assert max(t.datetime_complete for t in earlier) <= min(t.datetime_start for t in later)
    # Independent re-computation of each stage's ranges with `narrow`.
    space = parse_space(
        {"lr": {"low": 1e-6, "high": 10.0}, "weight_decay": {"low": 1e-6, "high": 1.0}}
    )
    expected = space
    for stage in (1, 2):
        best_first = [t.params for t in ranked(trials, stage - 1)]
        expected, _ = narrow(expected, space, best_first, Narrowing())
        assert result.stages[stage].space == expected
        for t in by_stage[stage]:
            assert expected["lr"].low <= t.params["lr"] <= expected["lr"].high
            assert t.distributions["lr"].low == pytest.approx(expected["lr"].low)
    # Coarse to fine: the final range is less than half as wide, centred within half a
    # decade of the optimum lr = 1e-2.
    final = result.stages[2].space["lr"]
    assert math.log10(final.high / final.low) < 7 / 2
    assert abs(math.log10(final.low * final.high) / 2 + 2) < 0.5
    assert result.best_trial.user_attrs["stage"] in (1, 2)
    assert result.study.user_attrs["babysit:ranges:2"]["lr"]["low"] == pytest.approx(final.low)


def test_a_best_value_at_the_edge_of_its_range_gives_a_boundary_warning(tmp_path):
    result = search(rising, SPACE, [Stage(15, epochs=1)], storage=_url(tmp_path))
    (stage, warning), *_ = result.warnings
    assert (stage, warning.param, warning.side) == (0, "lr", "high")
    assert "widen the range upwards" in warning.message
    assert result.final_warnings == [warning]


def test_auto_widen_lets_the_next_stage_sample_beyond_the_original_range(tmp_path):
    stages = [Stage(15, epochs=1), Stage(8, epochs=1)]
    result = search(rising, SPACE, stages, storage=_url(tmp_path), narrowing=Narrowing(widen=True))
    assert result.stages[1].space["lr"].high > 10.0
    assert max(t.params["lr"] for t in result.trials) > 10.0


def diverging_at(step):
    """An objective whose loss is steady, then jumps past 3x the first loss at `step`."""

    def objective(trial):
        for s in range(1, 1000):
            trial.check_loss(2.3 if s < step else 7.0)
        return 0.5

    return objective


def test_a_diverging_trial_is_pruned_with_its_reason_and_costs_only_the_steps_it_took(tmp_path):
    result = search(diverging_at(17), SPACE, [Stage(2, epochs=1)], storage=_url(tmp_path))
    for trial in result.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[STEPS_ATTR] == 17
        reason = trial.user_attrs["prune_reason"]
        assert reason == "loss 7 exceeded 3x the initial loss 2.3 at step 17"
    assert result.stages[0].prune_reasons == {"diverged": 2}
    assert result.best_trial is None


def test_a_nan_loss_or_a_nan_objective_is_pruned_not_crashed(tmp_path):
    def nan_loss(trial):
        trial.check_loss(2.0)
        trial.check_loss(float("nan"))
        return 1.0

    result = search(nan_loss, SPACE, [Stage(1, epochs=1)], storage=_url(tmp_path, "a.db"))
    assert result.trials[0].user_attrs["prune_reason"] == "loss became nan at step 2"
    result = search(
        lambda t: float("nan"), SPACE, [Stage(1, epochs=1)], storage=_url(tmp_path, "b.db")
    )
    assert result.trials[0].state == TrialState.PRUNED
    assert result.trials[0].user_attrs["prune_reason"] == "objective returned nan"


def _snapshot(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return study.user_attrs, [(t.number, t.state, t.params, t.value) for t in study.trials]


def test_an_existing_study_is_refused_without_resume_and_left_untouched(tmp_path):
    url = _url(tmp_path)
    search(peaked, SPACE, [Stage(3, epochs=1)], storage=url, study_name="s")
    before = _snapshot(url, "s")
    with pytest.raises(UsageError, match="already exists .*pass --resume"):
        search(peaked, SPACE, [Stage(3, epochs=1)], storage=url, study_name="s")
    with pytest.raises(UsageError, match="another config .*differs in stages"):
        search(peaked, SPACE, [Stage(4, epochs=1)], storage=url, study_name="s", resume=True)
    with pytest.raises(UsageError, match="differs in space.lr"):
        space = {**SPACE, "lr": (1e-5, 1.0)}
        search(peaked, space, [Stage(3, epochs=1)], storage=url, study_name="s", resume=True)
    assert _snapshot(url, "s") == before


def test_a_trial_that_raises_is_failed_with_its_error_and_the_search_goes_on(tmp_path):
    url = _url(tmp_path)

    def fragile(trial):
        if trial.params["lr"] > 1e-2:
            raise ValueError(f"lr {trial.params['lr']:.3g} is too high\nsecond line")
        return peaked(trial)

    stages = [Stage(8, epochs=1), Stage(3, epochs=1)]
    result = search(fragile, SPACE, stages, storage=url, study_name="f")
    first = [t for t in result.trials if t.user_attrs["stage"] == 0]
    raised = [t for t in first if t.params["lr"] > 1e-2]
    assert raised and len(raised) < 8  # the sample has both kinds
    for t in raised:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["error"] == f"ValueError: lr {t.params['lr']:.3g} is too high"
    assert result.stages[0].failed == len(raised)
    assert result.stages[0].complete == 8 - len(raised)
    assert result.stages[1].complete + result.stages[1].failed == 3
    assert result.done and result.given_up == []
    # --resume neither runs them again nor adds a trial
    again = search(fragile, SPACE, stages, storage=url, study_name="f", resume=True)
    assert len(again.trials) == len(result.trials)


def test_a_stage_whose_trials_all_fail_stops_the_search_with_one_line(tmp_path):
    from babysit.search.study import SearchStopped

    url = _url(tmp_path)

    def broken(trial):
        raise RuntimeError("CUDA out of memory")

    stages = [Stage(4, epochs=1), Stage(3, epochs=1)]
    with pytest.raises(SearchStopped) as info:
        search(broken, SPACE, stages, storage=url, study_name="b")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("stage 1: all 4 trials failed, e.g. trial #0 (lr=")
    assert "RuntimeError: CUDA out of memory" in message
    result = load_result(info.value.study)
    assert result.stages[0].failed == 4 and result.stages[1].pending == 3  # stage 2 not run
    with pytest.raises(SearchStopped):  # the same answer on resume, and nothing re-run
        search(broken, SPACE, stages, storage=url, study_name="b", resume=True)
    assert len(optuna.load_study(study_name="b", storage=url).trials) == 7


def test_ctrl_c_keeps_every_completed_trial_and_resume_completes_the_budget(tmp_path):
    url = _url(tmp_path)

    def interrupted(trial):
        if trial.number == 5:  # the retry runs under another number
            raise KeyboardInterrupt
        return peaked(trial)

    stages = [Stage(6, epochs=1), Stage(3, epochs=1)]
    with pytest.raises(KeyboardInterrupt):
        search(interrupted, SPACE, stages, storage=url, study_name="k")
    study = optuna.load_study(study_name="k", storage=url)
    done = {t.number: (t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(done) == 5
    result = search(interrupted, SPACE, stages, storage=url, study_name="k", resume=True)
    assert [s.complete for s in result.stages] == [6, 3]
    for number, (params, value) in done.items():
        assert (result.trials[number].params, result.trials[number].value) == (params, value)


def test_resume_recovers_a_trial_left_running_by_a_killed_process(tmp_path):
    url = _url(tmp_path)
    search(peaked, SPACE, [Stage(3, epochs=1)], storage=url, study_name="o")
    # A process that claimed a queued trial, sampled its parameters, then died (kill -9).
    study = optuna.load_study(study_name="o", storage=url)
    study.enqueue_trial({"lr": 0.1, "weight_decay": 0.01}, user_attrs={"stage": 0})
    orphan = study.ask()
    orphan.suggest_float("lr", 1e-6, 10.0, log=True)
    assert study.trials[orphan.number].state == TrialState.RUNNING
    result = load_result(study)
    assert result.stages[0].pending == 1
    from babysit.search.opening import recover

    assert recover(study, resolve_storage(url, tmp_path)) == [orphan.number]
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].params["lr"] == 0.1
    assert recover(study, resolve_storage(url, tmp_path)) == []  # nothing twice


def test_a_study_file_in_use_by_another_run_is_refused(tmp_path):
    url = _url(tmp_path)
    lock = StudyLock(resolve_storage(url, tmp_path)).acquire(exclusive=True)
    with lock, pytest.raises(UsageError, match="in use by another babysit search"):
        search(peaked, SPACE, [Stage(2, epochs=1)], storage=url)
    search(peaked, SPACE, [Stage(2, epochs=1)], storage=url)  # free again


def test_a_long_stage_median_pruner_stops_laggards_with_a_reason(tmp_path):
    def curves(trial):
        quality = peaked(trial)
        for epoch in range(1, trial.epochs + 1):
            trial.report(quality * epoch / trial.epochs, epoch)
        return quality

    stages = [Stage(16, epochs=4, pruner="median")]
    result = search(curves, SPACE, stages, storage=_url(tmp_path))
    pruned = [t for t in result.trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner stopped nobody"
    for trial in pruned:
        assert trial.user_attrs["prune_reason"].startswith("median: val_accuracy")
        assert trial.last_step < 4


def test_categorical_narrowing_restricts_what_later_stages_sample(tmp_path):
    space = {"lr": (1e-4, 1.0), "act": ["relu", "tanh", "elu", "gelu"]}

    def likes_relu(trial):
        return (1.0 if trial.params["act"] == "relu" else 0.0) + 0.01 * trial.params["lr"]

    stages = [Stage(12, epochs=1), Stage(8, epochs=1)]
    result = search(likes_relu, space, stages, storage=_url(tmp_path))
    kept = result.stages[1].space["act"].kept
    assert "relu" in kept and len(kept) < 4
    assert {t.params["act"] for t in result.trials if t.user_attrs["stage"] == 1} <= set(kept)


def test_bs_search_is_the_function_even_once_the_package_is_imported(tmp_path):
    import sys

    import babysit as bs
    import babysit.search.study  # noqa: F401

    package = sys.modules["babysit.search"]
    assert type(package).__name__ == "module" and not callable(package)  # no class patch
    assert bs.search is not package and callable(bs.search)
    result = bs.search(peaked, SPACE, [Stage(2, epochs=1)], storage=_url(tmp_path))
    assert result.stages[0].complete == 2
    default = bs.search(peaked, SPACE, study_name="defaults")  # the default stages, in memory
    assert [s.stage for s in default.stages] == list(package.DEFAULT_STAGES)


def test_the_trial_of_a_dead_local_worker_is_queued_again(tmp_path):
    from babysit.search.opening import WORKER_ATTR, fail_trials_of, worker_id

    url = _url(tmp_path)
    search(peaked, SPACE, [Stage(1, epochs=1)], storage=url, study_name="w")
    study = optuna.load_study(study_name="w", storage=url)
    study.enqueue_trial({"lr": 0.5}, user_attrs={"stage": 0})
    mine, theirs = study.ask(), study.ask()
    mine.suggest_float("lr", 1e-6, 10.0, log=True)
    mine.set_user_attr(WORKER_ATTR, worker_id(pid=4242))
    theirs.set_user_attr(WORKER_ATTR, worker_id(pid=4243))
    assert fail_trials_of(study, 4242) == [mine.number]
    trials = study.get_trials()
    assert trials[mine.number].state == TrialState.FAIL
    assert trials[theirs.number].state == TrialState.RUNNING  # another worker's: untouched
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == {"lr": 0.5}


def test_a_trial_interrupted_more_often_than_the_retry_cap_is_given_up_and_said_so(tmp_path):
    """Trial 1 (and each of its retries) is interrupted: after MAX_RETRIES retries it is given
    up; the result says which, the stage is short of its budget and done is false."""
    from babysit.search.opening import recover
    from babysit.search.storage import MAX_RETRIES

    url = _url(tmp_path)
    doomed = {1}

    def interrupted(trial):
        if trial.number in doomed or _retry_of(trial) in doomed:
            doomed.add(trial.number)
            raise KeyboardInterrupt
        return peaked(trial)

    stages = [Stage(3, epochs=1)]
    for attempt in range(MAX_RETRIES + 1):
        with pytest.raises(KeyboardInterrupt):
            search(interrupted, SPACE, stages, storage=url, study_name="g", resume=attempt > 0)
    result = search(interrupted, SPACE, stages, storage=url, study_name="g", resume=True)
    assert len(doomed) == MAX_RETRIES + 1
    (last,) = result.given_up
    assert last == max(doomed)
    assert result.stages[0].complete == 2 and result.stages[0].given_up == [last]
    assert not result.done
    study = optuna.load_study(study_name="g", storage=url)
    assert recover(study, resolve_storage(url, tmp_path)) == []  # nothing re-queued, none said
    assert len(study.get_trials()) == 3 + MAX_RETRIES


def _retry_of(trial):
    """The trial a babysit Trial retries (Optuna's `failed_trial` system attribute), or None."""
    frozen = trial.optuna.study._storage.get_trial(trial.optuna._trial_id)
    return frozen.system_attrs.get("failed_trial")


def test_resume_adopts_a_study_whose_creator_died_before_storing_the_plan(tmp_path):
    """kill -9 between create_study and the plan's write leaves an empty study: without
    --resume it is refused (pointing at --resume), with --resume it is set up and run."""
    url = _url(tmp_path)
    optuna.create_study(study_name="cut", storage=url, direction="maximize")
    with pytest.raises(UsageError, match=r"already exists .*\(0 trials\): pass --resume"):
        search(peaked, SPACE, [Stage(3, epochs=1)], storage=url, study_name="cut")
    result = search(peaked, SPACE, [Stage(3, epochs=1)], storage=url, study_name="cut", resume=True)
    assert result.stages[0].complete == 3 and result.done


def test_an_empty_study_on_a_shared_database_is_not_adopted_but_explained(tmp_path, monkeypatch):
    from babysit.search import opening as study_module
    from babysit.search.opening import open_study
    from babysit.search.plan import Plan
    from babysit.search.stages import check_stages
    from babysit.search.storage import StorageSpec

    monkeypatch.setattr(study_module, "PLAN_TIMEOUT_S", 0.5)  # the wait for a creator
    spec = StorageSpec(f"sqlite:///{tmp_path}/shared.db", "rdb")  # stands in for PostgreSQL
    optuna.create_study(study_name="cut", storage=spec.url, direction="maximize")
    plan = Plan(parse_space({"lr": {"low": 1e-3, "high": 1.0}}), tuple(check_stages([Stage(2, 1)])))
    with pytest.raises(UsageError, match=r"is empty and has no plan .*\(optuna delete-study"):
        open_study(plan, spec, "cut", resume=True, join=True)


def test_queueing_many_trials_says_so_instead_of_looking_hung(tmp_path, capsys, monkeypatch):
    from babysit.search import opening as study_module

    monkeypatch.setattr(study_module, "QUEUE_NOTICE", 30)  # 1000 in use: too slow for a test
    url = f"journal:{tmp_path}/many.journal"
    stages = [Stage(20, epochs=1), Stage(10, epochs=1)]
    result = search(lambda t: 0.5, {"lr": (1e-3, 1.0)}, stages, storage=url, study_name="many")
    assert "babysit: queueing 30 trials..." in capsys.readouterr().err
    assert result.stages[0].complete == 20
    search(lambda t: 0.5, {"lr": (1e-3, 1.0)}, stages[:1], storage=url, study_name="few")
    assert "queueing" not in capsys.readouterr().err


def test_without_storage_the_study_lives_in_memory_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = search(peaked, SPACE, [Stage(3, epochs=1)], study_name="same")
    second = search(peaked, SPACE, [Stage(3, epochs=1)], study_name="same")  # no "exists"
    assert first.stages[0].complete == second.stages[0].complete == 3
    assert isinstance(first.study._storage, optuna.storages.InMemoryStorage)
    assert list(tmp_path.iterdir()) == []


def _continuing(calls):
    """An objective that 'trains' a counter: it resumes the parent's count from its checkpoint
    and trains epochs - epochs_before more; the accuracy grows with lr closeness and epochs."""

    def objective(trial):
        state = trial.load_checkpoint()
        start = 0 if state is None else state["epochs"]
        calls.append((trial.number, trial.parent, trial.epochs_before, start))
        trial.save_checkpoint({"epochs": start + trial.epochs - trial.epochs_before})
        return peaked(trial) * (1 - 0.5 ** (start + trial.epochs - trial.epochs_before))

    return objective


def test_a_promoting_stage_continues_the_best_trials_of_the_stage_before(tmp_path):
    calls = []
    stages = [Stage(8, epochs=1), Stage(5, epochs=3, promote=2), Stage(2, epochs=6, promote=1)]
    folder = tmp_path / "checkpoints"
    result = search(_continuing(calls), SPACE, stages, checkpoints=folder)
    trials = result.trials
    for stage in (1, 2):
        best = ranked(trials, stage - 1)
        mine = sorted((t for t in trials if t.user_attrs["stage"] == stage), key=lambda t: t.number)
        promoted = [t for t in mine if "continues" in t.user_attrs]
        assert [t.user_attrs["continues"] for t in promoted] == [
            b.number for b in best[: stages[stage].promote]
        ]
        for t in promoted:
            parent = trials[t.user_attrs["continues"]]
            assert t.params == parent.params  # the same hyperparameters, trained on
        fresh = [t for t in mine if "continues" not in t.user_attrs]
        assert len(fresh) == stages[stage].trials - stages[stage].promote
    by_number = {n: (parent, before, start) for n, parent, before, start in calls}
    for t in trials:
        parent, before, start = by_number[t.number]
        if parent is None:
            assert (before, start) == (0, 0)
        else:  # resumed from the parent's own count: trained epochs in all, not from scratch
            assert before == stages[t.user_attrs["stage"] - 1].epochs == start
    # only trials a later stage may continue keep a checkpoint
    kept = {int(p.stem.split("-")[1]) for p in folder.iterdir()}
    assert kept == {t.number for t in trials if t.user_attrs["stage"] in (0, 1)}


def test_promotion_off_trains_every_trial_afresh_and_keeps_no_checkpoint(tmp_path):
    calls = []
    stages = [Stage(6, epochs=1), Stage(3, epochs=3)]  # promote = 0, the default
    folder = tmp_path / "checkpoints"
    result = search(_continuing(calls), SPACE, stages, checkpoints=folder)
    assert all(parent is None and before == 0 for _, parent, before, _ in calls)
    assert not any("continues" in t.user_attrs for t in result.trials)
    assert not folder.exists() or not any(folder.iterdir())


def test_promotion_false_overrides_the_stages_promote(tmp_path):
    calls = []
    stages = [Stage(6, epochs=1), Stage(3, epochs=3, promote=2)]
    folder = tmp_path / "checkpoints"
    result = search(_continuing(calls), SPACE, stages, checkpoints=folder, promotion=False)
    assert all(parent is None and before == 0 for _, parent, before, _ in calls)
    assert [s.stage.promote for s in result.stages] == [0, 0]
    assert not folder.exists() or not any(folder.iterdir())


def test_an_interrupted_promoted_trial_resumes_from_the_same_checkpoint(tmp_path):
    url, folder, calls = _url(tmp_path), tmp_path / "checkpoints", []
    stages = [Stage(6, epochs=1), Stage(3, epochs=3, promote=2)]
    inner = _continuing(calls)
    interrupted = []

    def once(trial):
        if trial.parent is not None and not interrupted:
            interrupted.append(trial.number)
            raise KeyboardInterrupt
        return inner(trial)

    with pytest.raises(KeyboardInterrupt):
        search(once, SPACE, stages, storage=url, study_name="p", checkpoints=folder)
    result = search(
        once, SPACE, stages, storage=url, study_name="p", checkpoints=folder, resume=True
    )
    (first,) = interrupted
    retry = [t for t in result.trials if t.system_attrs.get("failed_trial") == first]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["continues"] == result.trials[first].user_attrs["continues"]
    assert [s.complete for s in result.stages] == [6, 3]


def test_a_continued_trial_keeps_the_3x_rule_of_its_parents_first_loss(tmp_path):
    """A trained model's loss is small: a batch at 3x the continued run's first step is noise,
    not divergence. The rule compares with the first loss of the trial's line (its parent's)."""

    def objective(trial):
        if trial.parent is None:  # from scratch: 2.3 falls to 0.1
            for loss in (2.3, 1.0, 0.1):
                trial.check_loss(loss)
        else:  # continued: 0.05, a noisy batch at 0.4 (8x 0.05, below 3 x 2.3), then slot 0
            diverges = trial.optuna.user_attrs["slot"] == 0  # diverges for real
            for loss in (0.05, 0.4, 8.0 if diverges else 0.1):
                trial.check_loss(loss)
        state = trial.load_checkpoint()
        trial.save_checkpoint({"first": trial.first_loss})
        assert state is None or state["first"] == trial.first_loss == 2.3
        return peaked(trial)

    space = {"lr": (1e-3, 1.0)}
    stages = [Stage(6, epochs=1), Stage(4, epochs=2, promote=4)]
    result = search(objective, space, stages, checkpoints=tmp_path / "c", seed=3)
    continued = [t for t in result.trials if "continues" in t.user_attrs]
    assert len(continued) == 4
    for t in continued:  # 8.0 > 3 x 2.3 diverged; 0.4 never did
        expected = TrialState.PRUNED if t.user_attrs["slot"] == 0 else TrialState.COMPLETE
        assert t.state == expected, (t.params, t.user_attrs)
        assert t.user_attrs["first_loss"] == 2.3
    assert "exceeded 3x the initial loss 2.3 at step 3" in continued[0].user_attrs["prune_reason"]


def test_a_stage_can_promote_only_after_a_shorter_stage():
    with pytest.raises(Exception, match="promote continues trials of the stage before"):
        search(peaked, SPACE, [Stage(3, epochs=2, promote=1)])
    with pytest.raises(Exception, match="fewer epochs than this stage's 2"):
        search(peaked, SPACE, [Stage(3, epochs=2), Stage(2, epochs=2, promote=1)])
    with pytest.raises(Exception, match=r"promote must be an integer in \[0, trials = 2\]"):
        Stage(2, epochs=3, promote=3)
