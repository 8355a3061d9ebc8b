"""What the terminal and the figures show of user strings (module names with rich markup or
matplotlib mathtext in them), and what a log file gets when stderr is not a terminal."""

import io

import pytest
import torch
from rich.console import Console

from babysit.checks.findings import Finding
from babysit.cli import main
from babysit.report import plots
from babysit.report.report import Report

NAMES = ["[/]", "head[cls]", "$\\frac{$", "[bold]x[/bold]", "$x$"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _printed(report: Report) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    report.print(console)
    return console.file.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_the_findings_table_prints_a_layer_name_as_written(name):
    finding = Finding("SIGMOID_HIDDEN", "warning", "a sigmoid", "use ReLU", layer=name)
    assert name in _printed(Report([finding], {}, {}))  # only the layer column holds it


def _layer(name, depth):
    return {"name": name, "kind": "Linear", "activation": "relu", "depth": depth, "mean": 0.1,
            "std": 1.0 + depth, "grad_std": 1e-3, "histogram": [1.0, 2.0, 1.0],
            "bin_edges": [-1.0, 0.0, 1.0, 2.0]}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_the_figures_draw_a_layer_name_as_plain_text(name):
    layers = [_layer(name, 0), _layer(f"{name}2", 1)]
    for fig in (plots.activation_figure(layers), plots.histogram_figure(layers)):
        if fig is None:
            continue
        fig.canvas.draw()  # mathtext is parsed here: `$\frac{$` raised ValueError
        texts = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + [ax.title]]
        assert any(name.replace("$", r"\$") in t for t in texts)


def test_the_doctor_prints_and_draws_markup_in_module_names(tmp_path, capsys):
    (tmp_path / "named.py").write_text(
        "from collections import OrderedDict\nfrom torch import nn\n"
        "def model():\n"
        "    return nn.Sequential(OrderedDict([('flat', nn.Flatten()),\n"
        "        ('$\\\\frac{$', nn.Linear(16, 32)), ('[/]', nn.Sigmoid()),\n"
        "        ('head[cls]', nn.Linear(32, 4))]))\n"
    )
    out = tmp_path / "run"
    argv = ["doctor", "--data", "synthetic:n=200,shape=16,classes=4", "--out", str(out)]
    code = main([*argv, "--model", f"{tmp_path / 'named.py'}:model"])
    printed = capsys.readouterr()
    assert code in (0, 1) and "Traceback" not in printed.err
    assert (out / "report.html").is_file() and (out / "activations.png").is_file()
    assert "SIGMOID_HIDDEN" in printed.out and "[/]" in printed.out


def test_the_doctor_prints_no_progress_line_into_a_log(capsys):
    assert main(["doctor", "--data", "synthetic:n=200,shape=16,classes=4"]) == 0
    assert capsys.readouterr().err == ""  # was a stray blank line from the bar


def test_lab_prints_no_progress_bars_into_a_log(monkeypatch, capsys):
    from babysit import lab
    from babysit.lab import gallery

    class Done:
        ok = True

    def fake_run(names, scale, out, seed, progress, on_result):
        for name in names:
            for step in range(3):
                progress(name, step + 1, 3, f"step {step}")
            on_result(Done())
        return [Done() for _ in names]

    monkeypatch.setattr(lab, "run", fake_run)
    monkeypatch.setattr(gallery, "claims_table", lambda result, console: console.print("claims"))
    monkeypatch.setattr(gallery, "summary_table", lambda results, console: console.print("sum"))
    assert main(["lab", "init", "depth"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["claims", "claims", "sum"]
    assert "━" not in captured.err and captured.err.strip() == ""


def test_the_search_live_table_is_printed_once_into_a_log():
    import optuna

    from babysit.search.config import parse_config
    from babysit.search.report import LiveTrials

    cfg = parse_config(
        {"space": {"lr": {"low": 1e-3, "high": 1.0}}, "stages": [{"trials": 2, "epochs": 1}]},
        "s.toml",
    )
    log = Console(file=io.StringIO(), width=120, color_system=None)
    study = optuna.create_study()
    with LiveTrials(cfg.plan, "s", console=log) as view:
        for _ in range(3):
            study.enqueue_trial({"lr": 0.01})
            study.ask()
            view.update(study.get_trials(deepcopy=False))
    log.print("next line")
    text = log.file.getvalue()
    assert text.count("search s") == 1 and "\r" not in text and "\x1b" not in text
    assert "┘\nnext line" in text  # the table ended its line; it used to run into this one
