import json
import math

import pytest
from matplotlib.colors import to_hex
from rich.console import Console

from babysit.search import Stage, search
from babysit.search.report import (
    STAGE_COLORS,
    LiveTrials,
    _ranges_figure,
    _scatter,
    print_summary,
    write_report,
)

SPACE = {"lr": (1e-6, 10.0), "weight_decay": (1e-6, 1.0), "act": ["relu", "tanh"]}


def objective(trial):
    trial.check_loss(2.0)
    if trial.params["lr"] > 1.0:  # diverges: the classic empty top-right of the scatter
        trial.check_loss(float("inf"))
    return math.exp(-((math.log10(trial.params["lr"]) + 2) ** 2) / 4)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    stages = [Stage(14, epochs=1), Stage(5, epochs=2)]
    return search(objective, SPACE, stages, storage=f"sqlite:///{folder}/s.db", study_name="r")


def test_the_scatter_has_log_axes_one_colour_per_stage_and_marks_pruned_trials(result):
    fig = _scatter(result, "lr")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "val_accuracy"
    completed, pruned = {}, 0
    for collection in ax.collections:
        color = to_hex(collection.get_facecolor()[0])
        points = collection.get_offsets()
        if collection.get_label().startswith("stage"):
            completed[color] = len(points)
        else:
            pruned += len(points)
            assert all(y == pytest.approx(-0.05) for _, y in points)  # diverged: below zero
    assert completed == {
        STAGE_COLORS[0]: result.stages[0].complete,
        STAGE_COLORS[1]: result.stages[1].complete,
    }
    assert pruned == result.stages[0].pruned + result.stages[1].pruned > 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "stage 1 (1 epoch)",
        "stage 2 (2 epochs)",
    ]


def test_the_ranges_figure_draws_each_stage_range(result):
    fig = _ranges_figure(result, ["lr", "weight_decay"])
    lr_axis = fig.axes[0]
    assert lr_axis.get_xscale() == "log" and lr_axis.get_title(loc="left") == "lr"
    bars = [line.get_xdata() for line in lr_axis.get_lines() if len(line.get_xdata()) == 2]
    assert [tuple(b) for b in bars] == [
        (s.space["lr"].low, s.space["lr"].high) for s in result.stages
    ]


def test_search_json_and_html(result, tmp_path):
    json_path, html_path = write_report(result, tmp_path, "sqlite:///s.db")
    data = json.loads(json_path.read_text())
    assert data["study"] == "r" and data["storage"] == "sqlite:///s.db" and data["done"]
    assert len(data["trials"]) == 19
    assert data["best"]["number"] == result.best_trial.number
    assert data["stages"][1]["ranges"]["lr"]["low"] == pytest.approx(
        result.stages[1].space["lr"].low
    )
    diverged = [t for t in data["trials"] if t["state"] == "PRUNED"]
    assert all(t["prune_reason"].startswith("loss became inf") for t in diverged)
    html = html_path.read_text()
    assert "Boundary warnings" in html and "Range of each stage" in html
    assert html.count("<img") == 3  # lr, weight_decay (act is categorical), ranges


def test_the_live_table_and_the_summary_render(result):
    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    live = LiveTrials(result.plan, "r", console=console)
    console.print(live.render(result.trials))
    text = console.export_text()
    assert "stage 1: 14/14 (1 epoch)" in text and "stage 2: 5/5 (2 epochs)" in text
    assert "loss became inf" in text
    print_summary(result, console=console)
    text = console.export_text()
    assert "best configuration" in text and f"{result.best_value:.4f}" in text


def test_search_json_numbers_stages_from_1_as_the_screen_does(result, tmp_path):
    (json_path, _) = write_report(result, tmp_path)
    data = json.loads(json_path.read_text())
    assert [s["stage"] for s in data["stages"]] == [1, 2]
    assert {t["stage"] for t in data["trials"]} == {1, 2}
    first = [t for t in data["trials"] if t["stage"] == 1]
    assert len(first) == result.plan.stages[0].trials
    best_stage = result.best_trial.user_attrs["stage"] + 1
    assert data["best"]["stage"] == best_stage
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_summary(result, console=console)
    text = console.export_text()
    assert f"#{result.best_trial.number}, stage {best_stage}" in text
    for warning in data["warnings"]:
        assert f"boundary warning (stage {warning['stage']})" in text


def test_markup_in_names_and_values_is_shown_as_written_not_parsed(tmp_path):
    """A categorical value `[/]` is rich markup, a name `$\\frac{$` matplotlib mathtext: both
    used to crash the summary or the plots after every trial had run."""
    space = {"lr": (1e-3, 1.0), "$\\frac{$": (0.0, 1.0), "act": ["[/]", "[bold]x"]}

    def failing_sometimes(trial):
        if trial.params["act"] == "[bold]x":
            raise ValueError("[/] in an error")
        return trial.params["lr"]

    result = search(failing_sometimes, space, [Stage(6, epochs=1)], study_name="[red]s")
    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(LiveTrials(result.plan, "[red]s", console=console).render(result.trials))
    print_summary(result, console=console)
    text = console.export_text()
    assert "[/]" in text and "[bold]x" in text and "search [red]s" in text
    assert "ValueError: [/] in an error" in text
    json_path, html_path = write_report(result, tmp_path)
    assert "[/]" in json_path.read_text() and html_path.read_text().count("<img") == 3


def test_a_continued_trial_is_marked_in_search_json_and_the_tables(tmp_path):
    def objective(trial):
        trial.save_checkpoint({"n": 1})
        return trial.params["lr"]

    stages = [Stage(4, epochs=1), Stage(2, epochs=2, promote=1)]
    result = search(objective, {"lr": (1e-3, 1.0)}, stages, checkpoints=tmp_path / "c")
    (json_path, html_path) = write_report(result, tmp_path)
    data = json.loads(json_path.read_text())
    (continued,) = [t for t in data["trials"] if t["continues"] is not None]
    assert continued["stage"] == 2 and continued["continues"] == result.stages[0].best.number
    assert f"continues #{continued['continues']}" in html_path.read_text()


def _refuse(constant):
    raise ValueError(f"search.json holds {constant}, which strict JSON readers reject")


def test_search_json_is_strict_json_when_a_trial_reported_inf(tmp_path):
    """A trial that reported a non-finite value (an inf validation loss before it was
    pruned) is written as null, not as the Infinity that strict readers reject."""

    def diverging(trial):
        trial.report(float("inf") if trial.params["lr"] > 1e-3 else 0.5, 0)
        return 0.5

    result = search(diverging, {"lr": (1e-6, 10.0)}, [Stage(6, epochs=1)], seed=0)
    (json_path, _) = write_report(result, tmp_path)
    data = json.loads(json_path.read_text(), parse_constant=_refuse)
    reported = [t["last_reported"] for t in data["trials"]]
    assert None in reported and 0.5 in reported
