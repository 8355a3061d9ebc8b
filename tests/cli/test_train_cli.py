import json

import pytest

from babysit.cli import main
from babysit.train import load_history

DIGITS_TRAIN = 1438  # load_data("digits") keeps 80% of the 1,797 images for training
STEPS_PER_EPOCH = -(-DIGITS_TRAIN // 64)  # the default batch size


def _stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_train_on_digits_writes_the_monitor_history_and_the_metrics(tmp_path):
    assert main(["train", "--epochs", "2", "--out", str(tmp_path)]) == 0
    history = load_history(tmp_path / "history.jsonl")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [r["step"] for r in history if "layers" in r] == list(range(1, len(history) + 1, 10))
    assert metrics["steps"] == len(history) and metrics["stop_reason"] is None
    assert metrics["settings"]["preprocess"] == "standardize"
    assert metrics["settings"]["monitor_every"] == 10
    ends = [r for r in history if "val_accuracy" in r]
    assert [r["step"] for r in ends] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert [r["val_accuracy"] for r in ends] == [e["val_accuracy"] for e in metrics["epochs"]]
    assert metrics["epochs"][-1]["val_accuracy"] > 0.85  # a 2x100 MLP learns digits quickly
    ratios = history[0]["update_ratios"]
    assert set(ratios) == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "logits.weight",
        "logits.bias",
    }


def test_a_diverging_run_stops_with_exit_1_and_a_one_line_reason(tmp_path, capsys):
    code = main(["train", "--epochs", "3", "--lr", "100", "--out", str(tmp_path)])
    assert code == 1
    last = _stderr_lines(capsys)[-1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert last == f"babysit: training stopped: {metrics['stop_reason']}"
    assert "initial loss" in last or "loss became" in last
    alerts = [a for r in load_history(tmp_path / "history.jsonl") for a in r.get("alerts", [])]
    assert alerts == metrics["alerts"] and alerts[0]["message"] == metrics["stop_reason"]
    assert metrics["steps"] < 3 * STEPS_PER_EPOCH


def test_monitor_every_sets_the_cadence_and_zero_turns_the_monitor_off(tmp_path):
    assert (
        main(["train", "--epochs", "1", "--monitor-every", "7", "--out", str(tmp_path / "a")]) == 0
    )
    probed = [r["step"] for r in load_history(tmp_path / "a" / "history.jsonl") if "layers" in r]
    assert probed == list(range(1, STEPS_PER_EPOCH + 1, 7))
    assert (
        main(["train", "--epochs", "1", "--monitor-every", "0", "--out", str(tmp_path / "b")]) == 0
    )
    assert not (tmp_path / "b" / "history.jsonl").exists()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["steps"] == STEPS_PER_EPOCH


def test_tensorboard_option_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    assert main(["train", "--epochs", "1", "--tensorboard", str(tmp_path)]) == 0
    assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{file}"], "--out '{file}' is a file, not a directory"),
        (["--tensorboard", "{file}"], "--tensorboard '{file}' is a file, not a directory"),
        (["--monitor-every", "0", "--tensorboard", "tb"], "drop --monitor-every 0"),
        (["--preprocess", "whiten"], "unknown preprocessing 'whiten'"),
        (["--optimizer", "sgdd"], "unknown optimizer 'sgdd'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    file = tmp_path / "taken"
    file.write_text("not a directory")
    args = [a.format(file=file) for a in args]
    assert main(["train", "--epochs", "1", *args]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("babysit: error: ") and message.format(file=file) in line
    assert file.read_text() == "not a directory"


def test_a_negative_monitor_cadence_is_a_usage_error(capsys):
    assert main(["train", "--monitor-every", "-1"]) == 2
    assert "Invalid value for '--monitor-every'" in capsys.readouterr().err
