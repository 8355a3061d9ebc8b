"""`babysit lab` on the command line: listing, exit codes, one-line errors."""

import pytest

from babysit.cli import main
from babysit.lab import EXPERIMENTS
from babysit.lab.base import Claim, Experiment, Result


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_list_describes_every_experiment(capsys):
    assert main(["lab", "--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lab", "nope"], "unknown lab experiment 'nope'"),
        (["lab", "init", "--scale", "huge"], "unknown lab scale 'huge'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    assert main(argv) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("babysit: error: ") and message in err[0]


def test_out_that_is_a_file_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    ran = []
    fake = Experiment("fake", "t", lambda **kw: ran.append(1))
    monkeypatch.setitem(EXPERIMENTS, "fake", fake)
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["lab", "fake", "--out", str(path)]) == 2
    assert not ran and "is a file, not a folder" in capsys.readouterr().err


def _fake(passed: bool, exception: str = ""):
    def function(scale, seed, device, progress):
        claim = Claim("c", "s", "e", "m", passed, exception)
        return Result("fake", "t", "sum", "set", scale, [seed], [claim], {})

    return Experiment("fake", "t", function)


@pytest.mark.parametrize(
    ("passed", "exception", "code"),
    [(True, "", 0), (False, "", 1), (False, "documented: needs CIFAR-10", 0)],
)
def test_exit_code_is_1_only_for_an_undocumented_failure(monkeypatch, passed, exception, code):
    monkeypatch.setitem(EXPERIMENTS, "fake", _fake(passed, exception))
    assert main(["lab", "fake", "--scale", "tiny"]) == code


def test_a_real_experiment_writes_its_gallery(tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["lab", "babysitting", "--scale", "tiny", "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "FAIL (known)" in html
    captured = capsys.readouterr()
    assert "babysitting" in captured.out and "PASS" in captured.out
    assert f"gallery written to {out / 'index.html'}" in captured.err
