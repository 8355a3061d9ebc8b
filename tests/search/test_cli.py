"""`babysit search` end to end, and its answers to bad input: one line, exit code 2, and an
existing study never altered by a failed start."""

import json

import optuna
import pytest

from babysit.cli import main

TINY_DATA = "synthetic:n=150,shape=8,classes=3,seed=1"  # as in conftest.py


def _no_postgres_driver() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is None for name in ("psycopg", "psycopg2"))


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_config_module):
    """One tiny search, run once for the module: (config, out folder, stdout)."""
    folder = tmp_path_factory.mktemp("cli")
    config = make_config_module(folder / "tiny.toml")
    out = folder / "out"
    assert main(["search", str(config), "--out", str(out), "--no-live"]) == 0
    return config, out


def test_a_search_runs_its_stages_and_writes_json_and_html(finished):
    config, out = finished
    report = json.loads((out / "search.json").read_text())
    assert report["done"] and report["study"] == "tiny"
    assert [s["complete"] + s["pruned"] for s in report["stages"]] == [6, 3]
    assert len(report["trials"]) == 9
    assert report["best"]["value"] == max(t["value"] or 0 for t in report["trials"])
    html = (out / "search.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # lr, weight decay, stage ranges
    study = optuna.load_study(study_name="tiny", storage=_journal(out))
    assert len(study.trials) == 9  # readable by plain Optuna (and optuna-dashboard)


def _journal(out):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(out / "study.journal")))


def _study_state(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return study.user_attrs, [(t.number, t.state, t.params, t.value) for t in study.trials]


def test_bad_input_is_one_line_and_exit_2_and_leaves_the_study_untouched(
    finished, make_config, tmp_path, capsys
):
    tiny_config, out = finished
    url = _journal(out)
    before = _study_state(url, "tiny")
    capsys.readouterr()
    changed = make_config(tmp_path / "tiny.toml", stages="[[stages]]\ntrials = 4\nepochs = 1\n")
    bad_range = make_config(tmp_path / "range.toml", space="lr = { low = 1.0, high = 0.1 }")
    bad_log = make_config(tmp_path / "log.toml", space="lr = { low = -1.0, high = 0.1 }")
    unknown = make_config(tmp_path / "unknown.toml", space="gamma = { low = 0.1, high = 0.5 }")
    malformed = tmp_path / "malformed.toml"
    malformed.write_text("[space\nlr = 1")
    cases = [
        (["search", str(tiny_config), "--out", str(out)], "already exists"),
        (["search", str(changed), "--out", str(out), "--resume"], "another config"),
        (["search", str(bad_range), "--out", str(out)], "low < high"),
        (["search", str(bad_log), "--out", str(out)], "positive bounds"),
        (["search", str(unknown), "--out", str(out)], "unknown hyperparameter 'gamma'"),
        (["search", str(malformed), "--out", str(out)], "malformed TOML"),
        (["search", str(tmp_path / "none.toml")], "does not exist"),
        (["search", str(tiny_config), "--storage", "mongodb://x/y"], "unknown storage URL"),
        (
            ["search", str(tiny_config), "--storage", f"sqlite:///{out}/s.db", "--workers", "2"],
            "one writer",
        ),
    ]
    for argv, message in cases:
        assert main([*argv, "--no-live"]) == 2, argv
        lines = _error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("babysit: error: "), lines
        assert message in lines[0]
    assert _study_state(url, "tiny") == before


@pytest.mark.skipif(
    _no_postgres_driver(), reason="no PostgreSQL driver: pip install 'babysit[postgres]'"
)
def test_an_unreachable_database_is_one_line_without_the_password(tiny_config, capsys):
    url = "postgresql://u:pw@127.0.0.1:1/db"
    assert main(["search", str(tiny_config), "--storage", url, "--no-live"]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith("babysit: error: cannot open storage postgresql://u:***@127.0.0.1:1/db")


def test_resume_of_a_finished_study_changes_nothing_and_prints_the_summary(finished, capsys):
    tiny_config, out = finished
    before = _study_state(_journal(out), "tiny")
    assert main(["search", str(tiny_config), "--out", str(out), "--no-live", "--resume"]) == 0
    assert _study_state(_journal(out), "tiny")[1] == before[1]
    printed = capsys.readouterr().out
    assert "best configuration" in printed and "stages" in printed


@pytest.mark.slow  # spawns two processes that each import torch: ~25 s on a busy 2-core box
@pytest.mark.parametrize("workers", [2])
def test_local_workers_share_one_journal_study(make_config, tmp_path, workers, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    promoting = (
        "[[stages]]\ntrials = 6\nepochs = 1\n\n[[stages]]\ntrials = 3\nepochs = 2\npromote = 2\n"
    )
    tiny_config = make_config(tmp_path / "tiny.toml", stages=promoting)
    out = tmp_path / "out"
    argv = ["search", str(tiny_config), "--out", str(out), "--workers", str(workers)]
    assert main([*argv, "--no-live"]) == 0
    assert (out / "study.journal").exists() and not (out / "study.db").exists()
    # the same folder with one process continues that study, not another one
    assert main(["search", str(tiny_config), "--out", str(out), "--no-live", "--resume"]) == 0
    assert not (out / "study.db").exists()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))
    )
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
    # the workers shared the checkpoint folder: stage 2 continued stage 1's best two, whichever
    # worker had trained them
    from babysit.search.stages import ranked

    best = [t.number for t in ranked(trials, 0)[:2]]
    second = sorted((t for t in trials if t.user_attrs["stage"] == 1), key=lambda t: t.number)
    assert [t.user_attrs.get("continues") for t in second] == [*best, None]
    assert len({trials[n].user_attrs["worker"] for n in range(6)}) == 2


def test_a_study_babysit_did_not_make_is_refused_not_touched(tiny_config, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/foreign.db"
    foreign = optuna.create_study(study_name="tiny", storage=url)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    code = main(["search", str(tiny_config), "--storage", url, "--resume", "--no-live"])
    assert code == 2
    (line,) = _error_lines(capsys)
    assert "was not made by babysit search" in line
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 2


def _model_config(tmp_path, body, stages="[[stages]]\ntrials = 6\nepochs = 1\n"):
    """A config whose model is `build(input_shape, classes, width)` from a file of the test."""
    model = tmp_path / "model.py"
    model.write_text(
        "from torch import nn\n\n\n"
        "def build(input_shape, classes, width=8):\n"
        f"    {body}\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(),"
        " nn.Linear(width, classes))\n"
    )
    config = tmp_path / "fragile.toml"
    config.write_text(
        f'data = "{TINY_DATA}"\nmodel = "{model}:build"\n\n[fixed]\nbatch_size = 16\n\n'
        "[space]\nlr = { low = 1e-3, high = 1 }\nwidth = { low = 8, high = 100 }\n\n" + stages
    )
    return config


def test_a_builder_that_raises_for_some_values_fails_those_trials_and_the_search_goes_on(
    tmp_path, capsys
):
    config = _model_config(tmp_path, 'if width > 50:\n        raise ValueError(f"width {width}")')
    out = tmp_path / "out"
    assert main(["search", str(config), "--out", str(out), "--no-live"]) == 0
    report = json.loads((out / "search.json").read_text())
    failed = [t for t in report["trials"] if t["state"] == "FAIL"]
    assert failed and all(t["params"]["width"] > 50 for t in failed)
    assert all(t["error"] == f"ValueError: width {t['params']['width']}" for t in failed)
    assert report["stages"][0]["failed"] == len(failed) and report["done"]
    assert "failed" in capsys.readouterr().out


def test_a_stage_whose_trials_all_fail_stops_with_one_line_exit_1_and_writes_the_report(
    tmp_path, capsys
):
    config = _model_config(
        tmp_path,
        'raise RuntimeError("no GPU")',
        stages="[[stages]]\ntrials = 3\nepochs = 1\n\n[[stages]]\ntrials = 2\nepochs = 1\n",
    )
    out = tmp_path / "out"
    assert main(["search", str(config), "--out", str(out), "--no-live"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "stopped" in line]
    assert len(lines) == 1 and "stage 1: all 3 trials failed" in lines[0]
    assert "RuntimeError: no GPU" in lines[0]
    report = json.loads((out / "search.json").read_text())
    assert report["stages"][0]["failed"] == 3 and report["stages"][1]["pending"] == 2


def test_a_search_refused_at_start_leaves_no_study_behind(make_config, tmp_path, capsys):
    cnn_on_vectors = make_config(tmp_path / "cnn.toml", extra='model = "cnn"')
    out = tmp_path / "out"
    assert main(["search", str(cnn_on_vectors), "--out", str(out), "--no-live"]) == 2
    (line,) = _error_lines(capsys)
    assert "the cnn builder needs images" in line
    assert not out.exists()


def test_a_given_up_trial_is_named_and_the_exit_code_is_1(
    make_config, tmp_path, monkeypatch, capsys
):
    from babysit.search.objective import ModelObjective
    from babysit.search.storage import MAX_RETRIES

    config = make_config(tmp_path / "tiny.toml", stages="[[stages]]\ntrials = 2\nepochs = 1\n")
    out = tmp_path / "out"
    real, doomed = ModelObjective.__call__, {1}

    def interrupted(self, trial):
        if trial.number in doomed or _retry_of(trial) in doomed:
            doomed.add(trial.number)
            raise KeyboardInterrupt
        return real(self, trial)

    monkeypatch.setattr(ModelObjective, "__call__", interrupted)
    argv = ["search", str(config), "--out", str(out), "--no-live"]
    assert main(argv) == 130
    for _ in range(MAX_RETRIES):
        assert main([*argv, "--resume"]) == 130
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "re-queued" not in err
    (line,) = [line for line in err.splitlines() if "given up" in line]
    assert f"trial #{max(doomed)} was interrupted {MAX_RETRIES + 1} times and given up" in line
    assert "stage 1 ran 1 of its 2 trials" in line
    report = json.loads((out / "search.json").read_text())
    assert not report["done"] and report["given_up"] == [max(doomed)]


def _retry_of(trial):
    """The trial a babysit Trial retries (Optuna's `failed_trial` system attribute), or None."""
    frozen = trial.optuna.study._storage.get_trial(trial.optuna._trial_id)
    return frozen.system_attrs.get("failed_trial")


@pytest.mark.parametrize(("argv", "expected"), [([], 1), (["--threads", "2"], 2)])
def test_a_one_process_search_trains_on_one_torch_thread_unless_told(
    make_config, tmp_path, monkeypatch, argv, expected
):
    import torch

    from babysit.search.objective import ModelObjective

    config = make_config(tmp_path / "tiny.toml", stages="[[stages]]\ntrials = 2\nepochs = 1\n")
    real, seen = ModelObjective.__call__, []

    def counting(self, trial):
        seen.append(torch.get_num_threads())
        return real(self, trial)

    monkeypatch.setattr(ModelObjective, "__call__", counting)
    torch.set_num_threads(3)  # what torch would pick on a bigger machine
    out = tmp_path / "out"
    assert main(["search", str(config), "--out", str(out), "--no-live", *argv]) == 0
    assert seen == [expected, expected]
    assert torch.get_num_threads() == 3  # restored


def test_a_run_that_joins_a_study_another_process_created_says_joining(
    tiny_config, tmp_path, capsys
):
    from babysit.search.config import load_config
    from babysit.search.opening import open_study
    from babysit.search.storage import resolve_storage

    out = tmp_path / "out"
    study, created = open_study(
        load_config(tiny_config).plan, resolve_storage(None, out), "tiny", resume=False
    )  # another machine created it, nothing ran yet
    assert created
    capsys.readouterr()
    assert main(["search", str(tiny_config), "--out", str(out), "--no-live", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "joining study tiny" in err and "starting" not in err


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", ".."])
def test_a_study_name_that_would_leave_runs_is_refused(
    make_config, tmp_path, monkeypatch, capsys, name
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = make_config(tmp_path / "c.toml", extra=f'study = "{name}"')
    assert main(["search", str(config), "--no-live"]) == 2
    (line,) = _error_lines(capsys)
    assert f"study name {name!r} would make the folder" in line and "--out DIR" in line
    assert main(["search", str(config), "--no-live", "--study", name]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "work"]
    assert not any(work.iterdir())


def test_an_absurd_number_of_trials_is_refused_at_once(make_config, tmp_path, capsys):
    config = make_config(
        tmp_path / "huge.toml", stages="[[stages]]\ntrials = 100000000\nepochs = 1\n"
    )
    out = tmp_path / "out"
    assert main(["search", str(config), "--out", str(out), "--no-live"]) == 2
    (line,) = _error_lines(capsys)
    assert "ask for 100000000 trials" in line and "more than the 10000 a search queues" in line
    assert not out.exists()


def test_a_directory_given_as_the_config_is_named_a_directory(tmp_path, capsys):
    assert main(["search", str(tmp_path), "--no-live"]) == 2
    (line,) = _error_lines(capsys)
    assert "is a directory: give a .toml or .yaml file" in line and "does not exist" not in line
