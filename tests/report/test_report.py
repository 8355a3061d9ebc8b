"""The Report: its JSON (strict, round-trips), its files (atomic, re-drawable from
report.json alone), its HTML (self-contained, escaped) and the plots behind it."""

import json
import math
import os
import stat

import pytest
import torch
from matplotlib.figure import Figure

import babysit as bs
from babysit.checks.findings import Finding
from babysit.doctor import Budget
from babysit.errors import UsageError
from babysit.report import plots
from babysit.report.report import Report, json_safe


@pytest.fixture(scope="module")
def real_report():
    """A checkup of a 3-layer tanh MLP on standardized synthetic data, small budget."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    train, _ = bs.load_data("synthetic:n=400,shape=16,classes=4")
    torch.manual_seed(0)
    model = bs.nn.mlp(16, [32, 32, 32], 4, activation="tanh", init="xavier")
    report = bs.checkup(model, train, lr=0.05, budget=Budget(range_steps=60, lr_steps=40))
    torch.set_num_threads(saved)
    return report


def _tiny(**meta) -> Report:
    findings = [
        Finding(
            "DATA_NOT_SCALED",
            "warning",
            "scale <script>alert(1)</script>",
            "fix it",
            {"a": 1},
            "fc1",
        ),
        Finding("LABELS_INVALID", "error", "labels 0..10", "map them"),
        Finding("LR_SUGGESTION", "info", "lr 0.1", "use 0.1"),
    ]
    return Report(findings, {"x": [1.0, math.nan]}, dict(meta))


def test_json_safe_makes_strict_json():
    value = {"a": math.nan, "b": (1, math.inf), "c": torch.tensor([1.5, 2.0]), "d": None}
    safe = json_safe(value)
    assert safe == {"a": None, "b": [1, None], "c": [1.5, 2.0], "d": None}
    json.dumps(safe, allow_nan=False)


def test_summary_ok_and_order():
    report = _tiny()
    assert report.summary == {"error": 1, "warning": 1, "info": 1}
    assert not report.ok
    assert [f.severity for f in report.by_severity()] == ["error", "warning", "info"]
    assert str(report).splitlines()[1].startswith("  [error] LABELS_INVALID")


def test_round_trip_through_json(real_report):
    data = json.loads(real_report.to_json())
    assert Report.from_dict(data).to_dict() == real_report.to_dict()
    assert data["meta"]["schema"] == 1


@pytest.mark.parametrize(
    "data",
    [[], {"findings": "no"}, {"findings": [{"code": "NOT_A_CODE", "severity": "info"}]}],
)
def test_malformed_reports_are_usage_errors(data):
    with pytest.raises(UsageError):
        Report.from_dict(data)


def test_save_writes_files_with_normal_permissions_and_load_reads_them(tmp_path, real_report):
    page = real_report.save(tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.json", "report.html", "activations.png", "lr_range.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    mode = stat.S_IMODE(os.stat(page).st_mode)
    assert mode == 0o666 & ~_umask()
    assert Report.load(tmp_path / "out").to_dict() == real_report.to_dict()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_redrawing_leaves_report_json_alone(tmp_path):
    report = _tiny()
    report.save(tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    Report.load(tmp_path).save(tmp_path, write_json=False)
    assert (tmp_path / "report.json").read_bytes() == before


def test_load_and_save_refuse_bad_paths(tmp_path):
    with pytest.raises(UsageError, match="no report.json"):
        Report.load(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        Report.load(tmp_path)
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        _tiny().save(target)


def test_html_is_self_contained_and_escaped(real_report):
    page, figures = real_report.render_html()
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == len(figures) >= 4
    for f in real_report.findings:
        assert f.code in page
    tiny, _ = _tiny().render_html()
    assert "<script>alert" not in tiny and "&lt;script&gt;" in tiny
    assert "What was checked" in page and "About this run" in page


def test_every_plot_draws_the_real_measurements_and_skips_missing_ones(real_report):
    m = real_report.measurements
    drawn = [
        plots.activation_figure(m["layers"], m["init"]),
        plots.histogram_figure(m["layers"]),
        plots.lr_figure(m["lr_range"], m["lr"]),
        plots.update_ratio_figure(m["lr"]),
        plots.overfit_figure(m["overfit"]),
    ]
    assert all(isinstance(fig, Figure) for fig in drawn)
    assert plots.activation_figure([]) is None
    assert plots.lr_figure({}) is None
    assert plots.overfit_figure({}) is None
    assert plots.training_figure({}) is None
    assert plots.update_ratio_figure({}) is None


def test_the_lr_plot_marks_the_suggestion_and_the_given_rate(real_report):
    m = real_report.measurements
    fig = plots.lr_figure(m["lr_range"], m["lr"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("suggestion") for label in labels)
    assert "given lr 0.05" in labels


def test_the_training_plot_shows_train_and_val():
    epochs = [
        {
            "epoch": i,
            "train_accuracy": 0.5 + i / 20,
            "val_accuracy": 0.5,
            "train_loss": 1.0,
            "val_loss": 1.2,
        }
        for i in range(1, 6)
    ]
    fig = plots.training_figure({"epochs": epochs})
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train", "val"]
