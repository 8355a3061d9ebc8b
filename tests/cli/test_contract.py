"""The CLI contract on bad input, for every verb (doctor, train, search, lab, report): exit
code 2, one line on stderr that names the problem, no traceback, and nothing saved is lost.
The inputs are the ones an adversarial trial found tracebacks for (issue 15, items 8-11)."""

import errno
import json
import os
import textwrap

import numpy as np
import pytest
import torch

from babysit.cli import main

SMALL = "synthetic:n=120,shape=8x8,classes=4,seed=0"  # (N, 8, 8) inputs, 4 classes

MODELS = """
import torch
from torch import nn


def raises(input_shape, classes):
    raise RuntimeError("boom in the builder")


def needs_depth(depth):
    return nn.Linear(64, 4)


class _ForwardRaises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        raise RuntimeError("boom in forward")


def forward_raises():
    return _ForwardRaises()


def too_few_outputs():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def no_parameters():
    return nn.Sequential(nn.Flatten())


def three_d():  # (N, 1, 4): per-position scores, not one row of class scores per example
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Unflatten(1, (1, 4)))


class _Rounded(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        return self.fc(x.flatten(1)).long()


def integer_output():
    return _Rounded()
"""


@pytest.fixture(autouse=True)
def one_torch_thread():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def models(tmp_path):
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "broken.py").write_text("def model(:\n")
    return tmp_path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("babysit: error: ")
    return lines[0]


def _refuse(capsys, argv, *fragments) -> str:
    assert main(argv) == 2
    line = _one_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    return line


# --- doctor --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("models.py:raises", ["RuntimeError: boom in the builder"]),
        ("models.py:needs_depth", ["needs depth", "give the others defaults"]),
        ("broken.py:model", ["SyntaxError", "broken.py, line 1"]),
        ("torch.nn:Linear", ["names a class", "def model(input_shape, classes)"]),
    ],
)
@pytest.mark.parametrize("verb", ["doctor", "train"])
def test_a_model_builder_that_fails_is_one_line(models, capsys, verb, spec, fragments):
    spec = str(models / spec) if ".py:" in spec else spec
    _refuse(capsys, [verb, "--data", SMALL, "--model", spec], f"--model {spec}", *fragments)


def test_npz_of_0d_arrays_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.array(1.0), y=np.array(2))
    _refuse(capsys, ["doctor", "--data", f"npz:{tmp_path / 'd.npz'}"], "single value")


def test_a_text_file_as_npz_gets_the_right_reason(tmp_path, capsys):
    (tmp_path / "d.npz").write_text("x,y\n1,2\n")
    line = _refuse(capsys, ["doctor", "--data", f"npz:{tmp_path / 'd.npz'}"], "not a .npz file")
    assert "pickle" not in line


def test_an_output_of_shape_n_1_c_is_not_blamed_on_the_labels(models, capsys):
    line = _refuse(
        capsys,
        ["doctor", "--data", SMALL, "--model", f"{models / 'models.py'}:three_d"],
        ", 1, 4))",
    )
    assert "label" not in line.split("(shape")[0]  # the output's shape is named, not the labels


def _typo_label_npz(tmp_path, label):
    g = np.random.default_rng(0)
    y = np.arange(200) % 10
    y[5] = label
    np.savez(tmp_path / "d.npz", x=g.normal(size=(200, 16)).astype(np.float32), y=y)
    return f"npz:{tmp_path / 'd.npz'}"


@pytest.mark.parametrize("label", [999_999, 10**10])
def test_a_typo_label_is_labels_invalid_not_a_million_class_head(tmp_path, capsys, label):
    built = []
    import babysit.nn

    real = babysit.nn.default_model

    def spy(input_shape, classes):
        built.append(classes)
        return real(input_shape, classes)

    spec = _typo_label_npz(tmp_path, label)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(babysit.nn, "default_model", spy)
        code = main(["doctor", "--data", spec, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and built == [10]
    invalid = [f for f in report["findings"] if f["code"] == "LABELS_INVALID"]
    assert invalid and invalid[0]["evidence"]["max"] == label


def test_train_refuses_a_typo_label_before_building_anything(tmp_path, capsys):
    _refuse(capsys, ["train", "--data", _typo_label_npz(tmp_path, 999_999)], "far above")


# --- --out checked before the work ---------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the command starts loading data, i.e. starts its work."""
    import babysit.data

    def started(*args, **kwargs):
        raise AssertionError("the work started before --out was checked")

    monkeypatch.setattr(babysit.data, "load_data", started)


@pytest.mark.parametrize("verb", ["doctor", "train"])
def test_out_under_a_regular_file_is_refused_before_the_work(tmp_path, capsys, no_work, verb):
    (tmp_path / "file").write_text("keep me")
    out = tmp_path / "file" / "run"
    _refuse(capsys, [verb, "--out", str(out)], "is under", "a file, not a directory")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("verb", ["doctor", "train"])
def test_out_on_a_full_disk_is_refused_before_the_work(
    tmp_path, capsys, monkeypatch, no_work, verb
):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    _refuse(capsys, [verb, "--out", str(tmp_path / "run")], "is not writable", "No space left")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("verb", ["doctor", "train"])
def test_out_in_a_read_only_folder_is_refused_before_the_work(tmp_path, capsys, no_work, verb):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        _refuse(capsys, [verb, "--out", str(tmp_path / "ro" / "run")], "is not writable")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_out_in_proc_is_refused(capsys, no_work):
    _refuse(capsys, ["doctor", "--out", "/proc/babysit-run"], "is not writable")


# --- train: models that cannot train, found on one batch before training -------------------


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("forward_raises", ["forward fails", "RuntimeError: boom in forward"]),
        ("too_few_outputs", ["shape (64, 3)", "needs (64, 4)"]),
        ("no_parameters", ["no trainable parameters"]),
        ("three_d", ["shape (64, 1, 4)", "needs (64, 4)"]),
        ("integer_output", ["int64 outputs", "not floating-point"]),
    ],
)
def test_train_refuses_a_model_that_cannot_train_before_the_first_step(
    models, tmp_path, capsys, name, fragments
):
    out = tmp_path / "run"
    argv = ["train", "--data", SMALL, "--model", f"{models / 'models.py'}:{name}"]
    _refuse(capsys, [*argv, "--out", str(out)], *fragments)
    assert not list(out.iterdir())  # no history, no metrics of a run that never ran


def test_the_preflight_leaves_the_seeded_run_unchanged(tmp_path):
    """The pre-flight forward runs in eval mode without gradients: the metrics of a run are
    those of the same run without it."""
    import babysit.cli as cli

    runs = []
    for check in (cli._preflight, lambda *args: None):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cli, "_preflight", check)
            out = tmp_path / f"run{len(runs)}"
            assert main(["train", "--data", SMALL, "--epochs", "2", "--out", str(out)]) == 0
            runs.append(json.loads((out / "metrics.json").read_text())["epochs"])
    assert runs[0] == runs[1]


# --- search (cases that already worked; the search engineer covers the new ones) -----------


def _search_config(tmp_path, body):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (None, "does not exist"),
        ("[space\nlr = 1\n", "s.toml"),
        ("[space]\nlr = { low = 1.0, high = 0.1 }\n[[stages]]\ntrials = 2\nepochs = 1\n", "lr"),
    ],
)
def test_search_bad_config_is_one_line(tmp_path, capsys, body, fragment):
    config = str(tmp_path / "none.toml") if body is None else _search_config(tmp_path, body)
    _refuse(capsys, ["search", config, "--out", str(tmp_path / "out"), "--no-live"], fragment)


def test_search_bad_storage_url_is_one_line(tmp_path, capsys):
    config = _search_config(
        tmp_path, "[space]\nlr = { low = 1e-3, high = 1 }\n[[stages]]\ntrials = 2\nepochs = 1\n"
    )
    _refuse(capsys, ["search", config, "--storage", "mysql+nothing://x", "--no-live"])


# --- lab -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["lab", "bogus"], "unknown lab experiment 'bogus'"), (["lab", "--scale", "huge"], "huge")],
)
def test_lab_bad_input_is_one_line(capsys, argv, fragment):
    _refuse(capsys, argv, fragment)


# --- report: a report.json that is not what babysit writes ----------------------------------


@pytest.fixture(scope="module")
def saved_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    torch.set_num_threads(1)
    assert main(["doctor", "--data", SMALL, "--out", str(out)]) in (0, 1)
    return json.loads((out / "report.json").read_text())


def _spoil(report, where, value):
    report = json.loads(json.dumps(report))
    if where == "measurements":
        report["measurements"] = value
    elif where == "meta":
        report["meta"] = value
    else:
        report["measurements"][where] = value
    return report


@pytest.mark.parametrize(
    ("where", "value", "fragment"),
    [
        ("measurements", [1, 2], "'measurements' is a list"),
        ("meta", "x", "'meta' is a str"),
        ("layers", "oops", "does not have the shape babysit writes"),
        ("layers", [1, 2], "does not have the shape babysit writes"),
        ("layers", [{"name": 5, "mean": "x"}], "does not have the shape babysit writes"),
        ("lr_range", "fast", "does not have the shape babysit writes"),
        ("init", [1], "does not have the shape babysit writes"),
    ],
)
def test_report_of_malformed_json_is_one_line_and_keeps_the_file(
    saved_report, tmp_path, capsys, where, value, fragment
):
    text = json.dumps(_spoil(saved_report, where, value))
    (tmp_path / "report.json").write_text(text)
    _refuse(capsys, ["report", str(tmp_path)], fragment)
    assert (tmp_path / "report.json").read_text() == text


def test_report_of_json_nested_100k_deep_is_one_line(tmp_path, capsys):
    (tmp_path / "report.json").write_text("[" * 100_000 + "]" * 100_000)
    _refuse(capsys, ["report", str(tmp_path)], "nests too deeply")
