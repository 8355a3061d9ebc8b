"""`babysit doctor` and `babysit report` through babysit.cli.main: exit codes 0 / 1 / 2,
--json on stdout, one-line errors without a traceback, the saved report re-rendered."""

import json

import numpy as np
import pytest
import torch

from babysit.cli import main

# Unit-scale Gaussian classes (babysit.data's synthetic spec): nothing to report.
CLEAN = "synthetic:n=400,shape=16,classes=4"


@pytest.fixture(autouse=True)
def one_torch_thread():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_default_doctor_flags_raw_digits_and_exits_0(capsys):
    code, report = _json(capsys, ["doctor", "--json"])
    assert code == 0
    loud = {f["code"] for f in report["findings"] if f["severity"] != "info"}
    assert loud == {"DATA_NOT_CENTERED", "DATA_NOT_SCALED"}
    assert report["summary"]["error"] == 0
    assert report["meta"]["data"] == "digits"


def test_clean_data_exits_0_with_no_warning(capsys):
    code, report = _json(capsys, ["doctor", "--data", CLEAN, "--json"])
    assert code == 0
    assert [f["code"] for f in report["findings"]] == ["LR_SUGGESTION"]


def test_an_error_finding_exits_1(tmp_path, capsys):
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 8)).astype(np.float32)
    x[5, 3] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=g.integers(0, 3, 200))
    code, report = _json(capsys, ["doctor", "--data", f"npz:{tmp_path / 'd.npz'}", "--json"])
    assert code == 1
    assert [f["code"] for f in report["findings"] if f["severity"] == "error"] == ["DATA_NONFINITE"]


def test_a_given_lr_far_too_high_exits_1(capsys):
    code, report = _json(capsys, ["doctor", "--data", CLEAN, "--lr", "50", "--json"])
    assert code == 1 and "LR_TOO_HIGH" in {f["code"] for f in report["findings"]}


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "--data", "nonsense"],
        ["doctor", "--data", "npz:/nonexistent/file.npz"],
        ["doctor", "--data", CLEAN, "--lr", "-1"],
        ["doctor", "--data", CLEAN, "--optimizer", "lbfgs"],
        ["doctor", "--data", CLEAN, "--preprocess", "whitening"],
        ["doctor", "--data", CLEAN, "--loss", "hinge"],
        ["doctor", "--data", CLEAN, "--model", "no_such_module:build"],
        ["report", "/nonexistent/folder"],
    ],
)
def test_bad_usage_exits_2_with_one_line_and_no_traceback(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("babysit: error:") and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["doctor", "--data", CLEAN, "--out", str(target)]) == 2
    assert target.read_text() == "keep me"


def test_out_writes_the_report_and_report_redraws_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["doctor", "--data", CLEAN, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "LR_SUGGESTION" in table and "babysit checkup" in table
    saved = (out / "report.json").read_bytes()
    assert {"report.json", "report.html", "lr_range.png"} <= {p.name for p in out.iterdir()}
    (out / "report.html").unlink()
    (out / "lr_range.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 10_000 and (out / "lr_range.png").exists()
    assert (out / "report.json").read_bytes() == saved  # re-rendering never rewrites results
    assert "LR_SUGGESTION" in capsys.readouterr().out


def test_report_json_prints_the_saved_report(tmp_path, capsys):
    from babysit.checks.findings import Finding
    from babysit.report.report import Report

    saved = Report([Finding("LR_SUGGESTION", "info", "lr 0.1", "use it")], {}, {"seed": 0})
    saved.save(tmp_path)
    code, again = _json(capsys, ["report", str(tmp_path), "--json"])
    assert code == 0 and again == saved.to_dict()


def test_bce_and_mse_losses_on_class_data(capsys):
    for loss in ("bce", "mse"):
        code, report = _json(capsys, ["doctor", "--data", CLEAN, "--loss", loss, "--json"])
        assert code == 0, loss
        assert report["meta"]["loss"] == {"bce": "BCEWithLogitsLoss", "mse": "MSELoss"}[loss]
        assert [f["severity"] for f in report["findings"]] == ["info"]
