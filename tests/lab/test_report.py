import json

import pytest
from rich.console import Console

from babysit.errors import UsageError
from babysit.lab import EXPERIMENTS
from babysit.lab import gallery as report
from babysit.lab.base import Claim, Result


def _result(name, passed=True, exception=""):
    claims = [
        Claim("first claim", "Lecture 6", "x < 1", "x = 0.5 [0.4, 0.6]", True),
        Claim("second claim", "Paper 2015", "y > 2", "y = 1", passed, exception),
    ]
    return Result(name, f"{name} title", "what it shows", "setting", "tiny", [0, 1], claims, {})


def test_save_writes_result_page_and_index_and_keeps_other_experiments(tmp_path):
    report.save(_result("alpha"), tmp_path, order=["beta", "alpha"])
    index = report.save(
        _result("beta", passed=False, exception="needs CIFAR"), tmp_path, order=["beta", "alpha"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alpha.html",
        "alpha.json",
        "beta.html",
        "beta.json",
        "index.html",
    ]
    html = index.read_text()
    assert html.index('id="beta"') < html.index('id="alpha"')  # in the given order
    assert html.count('class="pass"') == 3 * 2  # summary badges + section badges
    assert "FAIL (known)" in html and "Known exception: needs CIFAR" in html
    assert json.loads((tmp_path / "alpha.json").read_text())["claims"][0]["text"] == "first claim"
    assert [r.name for r in report.load_results(tmp_path, ["beta", "alpha"])] == ["beta", "alpha"]


def test_index_reuses_saved_sections_instead_of_drawing_again(tmp_path, monkeypatch):
    report.save(_result("alpha"), tmp_path)
    drawn = []
    original = report.section_html
    monkeypatch.setattr(report, "section_html", lambda r: drawn.append(r.name) or original(r))
    report.save(_result("beta"), tmp_path)
    assert drawn == ["beta"]
    (tmp_path / "alpha.html").write_text("no markers")  # a damaged page is drawn again
    report.save(_result("beta"), tmp_path)
    assert drawn == ["beta", "beta", "alpha"]  # beta's new result, then alpha's lost section


def test_a_failed_save_leaves_the_previous_files_whole(tmp_path, monkeypatch):
    report.save(_result("alpha"), tmp_path)
    before = (tmp_path / "index.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "gallery", broken)
    with pytest.raises(RuntimeError):
        report.save(_result("alpha", passed=False), tmp_path)
    assert (tmp_path / "index.html").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_files_that_are_not_lab_results_are_ignored(tmp_path):
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{not json")
    report.save(_result("alpha"), tmp_path)
    assert [r.name for r in report.load_results(tmp_path)] == ["alpha"]


def test_out_dir_that_is_a_file_is_a_usage_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        report.check_out_dir(path)


def test_claims_table_shows_brackets_and_the_known_exception():
    console = Console(record=True, width=200)
    report.claims_table(_result("alpha", passed=False, exception="needs CIFAR"), console)
    text = console.export_text()
    assert "x = 0.5 [0.4, 0.6]" in text  # not swallowed as rich markup
    assert "FAIL (known)" in text and "known exception: needs CIFAR" in text


def test_every_experiment_has_figures_and_they_render(tiny):
    for name in ("depth", "lsuv"):
        pngs = report.figures(tiny(name))
        assert pngs and all(png.startswith(b"\x89PNG") for png, _ in pngs)
    assert len(EXPERIMENTS) >= 8 and all(callable(e.figures) for e in EXPERIMENTS.values())


def test_a_result_of_an_unregistered_experiment_has_no_figures_but_a_section():
    result = _result("retired")
    assert report.figures(result) == []
    assert 'id="retired"' in report.section_html(result)


def test_a_saved_result_is_strict_json_and_loads_back(tmp_path):
    import math

    import numpy as np
    import torch

    result = _result("alpha")
    result.data = {"steps": [math.inf, 3], "ratio": math.nan, "x": np.float32(0.5)}
    result.data["t"] = torch.tensor(2.0)
    report.save(result, tmp_path)

    def refuse(constant):
        raise ValueError(f"{constant} is not strict JSON")

    text = (tmp_path / "alpha.json").read_text()
    saved = json.loads(text, parse_constant=refuse)
    assert saved["data"] == {"steps": [None, 3], "ratio": None, "x": 0.5, "t": 2.0}
    assert report.load_results(tmp_path)[0].data == saved["data"]
