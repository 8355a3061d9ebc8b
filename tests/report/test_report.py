"""The Report: its JSON (strict, round-trips), its files (atomic, re-drawable from
report.json alone), its HTML (self-contained, escaped) and the plots behind it."""

import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

import babysit as bs
from babysit._io import json_safe
from babysit.checks import training_run
from babysit.checks.findings import CODES, Finding
from babysit.checks.registry import BOOKKEEPING, CHECKUP, RUN_REPORT_CODES
from babysit.doctor import Budget
from babysit.errors import UsageError
from babysit.report import plots
from babysit.report.report import Report


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


# --- the "what was checked" table: every code has a check, a row and a documented section -

# Each docs/checkup.md section of codes, and the report rows its codes may be shown in.
_SECTION_ROWS = {
    "Data": {"data"},
    "Architecture": {"architecture"},
    "Init": {"init"},
    "Sanity checks": {"initial_loss", "overfit", "learnable", "regularization"},
    "Learning rate": {"lr"},
    "Training run (`quick=False` / `--full`, with validation data)": {"training"},
    "Bookkeeping": {None},
}

# Measurements just complete enough for every row of the table to be drawn.
_MEASURED = {
    "data": {"offset_ratio": 0.1, "std_rms": 1.0, "min": -2.0, "max": 2.0},
    "architecture": {"weight_layers": ["fc1", "fc2"], "output_shape": [10]},
    "init": {"hidden_layers": 1},
    "initial_loss": {"loss": 2.3, "expected": 2.3},
    "overfit": {"initial_loss": 2.3, "final_loss": 0.01, "final_accuracy": 1.0},
    "learnable": {"held_out_accuracy": 0.9, "chance": 0.1},
    "regularization": {"rise": 0.2, "plain": {"loss": 0.01}, "decayed": {"loss": 0.3}},
    "lr": {"run": {"lr": 0.1, "first_loss": 2.3, "last_loss": 0.5, "update_ratios": {}}},
    "training": {"train_accuracy": 0.99, "val_accuracy": 0.97},
}
# The row titles, written out here as the reference the registry's titles are checked against.
_TITLES = {
    "data": "data audit",
    "architecture": "architecture audit",
    "init": "init audit",
    "initial_loss": "initial loss",
    "overfit": "overfit 20 examples",
    "learnable": "labels learnable",
    "regularization": "regularization",
    "lr": "learning rate",
    "training": "training run",
}


def _documented_sections(doc: str = "checkup.md") -> dict[str, str]:
    """Code -> the docs '###' section whose table has a row for it."""
    text = (Path(__file__).parents[2] / "docs" / doc).read_text()
    found, section = {}, None
    for line in text.splitlines():
        if line.startswith("### ") or line.startswith("## "):
            section = line.lstrip("#").strip()
        for code in re.findall(r"^\| `([A-Z_]+)`(?: / `([A-Z_]+)`)?", line):
            for c in code:
                if c and section is not None:
                    found.setdefault(c, section)
    return found


def _rows_showing(report: Report, code: str) -> list[str]:
    return [title for title, _, found in report.check_rows() if code in {f.code for f in found}]


def _owners(code: str) -> list:
    return [c for c in CHECKUP if code in c.codes]


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_has_a_check_that_raises_it(code):
    owners = _owners(code)
    if code in BOOKKEEPING:
        assert owners == [], f"bookkeeping code {code} is declared by {owners}"
    elif code in RUN_REPORT_CODES:
        source = (Path(training_run.__file__)).read_text()
        assert f'"{code}"' in source, f"{code} is not raised by babysit.checks.training_run"
    else:
        assert owners, f"no check of babysit.checks.registry declares {code} in its codes"


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_has_a_documented_section_and_the_report_row_of_that_section(code):
    if code in RUN_REPORT_CODES and not _owners(code):
        assert code in _documented_sections("monitor.md"), f"{code} is not in docs/monitor.md"
        return
    sections = _documented_sections()
    assert code in sections, f"{code} has no row in a section of docs/checkup.md"
    rows = _SECTION_ROWS[sections[code]]
    severity = "error" if code != "LR_SUGGESTION" else "info"
    if rows == {None}:
        report = Report([Finding(code, severity, "m", "f")], _MEASURED)
        assert _rows_showing(report, code) == [], f"bookkeeping code {code} is shown in a row"
        return
    owners = _owners(code)
    for check in owners:
        report = Report([Finding(code, severity, "m", "f", check=check.key)], _MEASURED)
        shown = _rows_showing(report, code)
        assert shown == [_TITLES[check.row_key]], f"{code} from {check.name} is shown in {shown}"
    # documented with (one of) the checks that raise it
    assert {c.row_key for c in owners} & rows, f"{code} ({sections[code]}) is raised elsewhere"


def test_the_registry_titles_are_the_report_rows():
    titled = {c.key: c.title for c in CHECKUP if c.title is not None}
    assert titled == _TITLES
    assert [title for title, _, _ in Report([], _MEASURED).check_rows()] == list(_TITLES.values())


def test_an_error_is_never_next_to_ok():
    nan = Finding("NAN_LOSS", "error", "the loss became nan", "lower lr", check="training")
    report = Report([nan], _MEASURED)
    page, _ = report.render_html()
    checks = page[page.index("What was checked") :]
    row = checks[checks.index("training run") :].split("</tr>")[0]
    assert "NAN_LOSS" in row and "ok" not in row
    # an info finding alone leaves its row ok, and still shows which code it raised
    info = Report([Finding("LR_SUGGESTION", "info", "lr 0.1", "use it")], _MEASURED)
    page, _ = info.render_html()
    checks = page[page.index("What was checked") :]
    row = checks[checks.index("learning rate") :].split("</tr>")[0]
    assert "ok" in row and "LR_SUGGESTION" in row


def test_a_code_several_steps_raise_is_shown_in_the_step_that_raised_it():
    at_init = Finding("NAN_LOSS", "error", "nan at init", "fix", check="initial_loss")
    failed = Finding(
        "CHECK_FAILED", "warning", "x", "y", {"step": "lr range test"}, check="lr_range"
    )
    report = Report([at_init, failed], _MEASURED)
    assert _rows_showing(report, "NAN_LOSS") == ["initial loss"]
    assert _rows_showing(report, "CHECK_FAILED") == ["learning rate"]


def test_a_report_saved_before_findings_named_their_check_places_them_as_it_did():
    old = [
        Finding("NAN_LOSS", "error", "nan at init", "fix", {"check": "initial_loss"}),
        Finding("CHECK_FAILED", "warning", "x", "y", {"step": "learning rate"}),
        Finding("DEAD_UNITS", "warning", "dead", "fix"),
    ]
    report = Report.from_dict(json.loads(Report(old, _MEASURED).to_json()))
    assert _rows_showing(report, "NAN_LOSS") == ["initial loss"]
    assert _rows_showing(report, "CHECK_FAILED") == ["learning rate"]
    assert _rows_showing(report, "DEAD_UNITS") == ["init audit"]


def test_the_checkup_records_the_step_of_each_finding():
    train, _ = bs.load_data("synthetic:n=200,shape=16,classes=4")
    torch.manual_seed(0)
    model = bs.nn.mlp(16, [32, 32], 4, activation="sigmoid", init="xavier")
    budget = Budget(overfit_steps=30, learnable_steps=20, reg_steps=10, range_steps=30, lr_steps=20)
    report = bs.checkup(model, train, lr=100.0, budget=budget)
    checks = {f.code: f.check for f in report.findings}
    assert checks["SIGMOID_HIDDEN"] == "architecture" and checks["LR_TOO_HIGH"] == "lr"
    assert _rows_showing(report, "LR_TOO_HIGH") == ["learning rate"]
    assert all(check in _TITLES for code, check in checks.items() if code != "CHECK_SKIPPED")
    assert [f["check"] for f in json.loads(report.to_json())["findings"]] == [
        f.check for f in report.findings
    ]
