import copy
import json
import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from babysit.errors import UsageError
from babysit.nn import mlp
from babysit.probes import LayerStats, activation_stats
from babysit.train import Monitor, TrainingStopped, fit, load_history


def _data(n=64, features=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return mlp(20, [30, 30], 4, **kw)


def _train(model, optimizer, mon, steps, x, y, loss_fn=nn.functional.cross_entropy):
    """A plain PyTorch loop; returns the loss of each step as host floats."""
    seen = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mon.step(loss)
        seen.append(loss.item())
    return seen


def test_history_has_every_step_loss_and_probes_the_first_step_then_every_n():
    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=5) as mon:
        losses = _train(model, opt, mon, 12, x, y)
    history = mon.history
    assert [r["step"] for r in history] == list(range(1, 13))
    assert [r["loss"] for r in history] == pytest.approx(losses, rel=1e-6)
    assert [r["step"] for r in history if "layers" in r] == [1, 6, 11]
    assert [r["step"] for r in history if "update_ratios" in r] == [1, 6, 11]
    names = [layer["name"] for layer in history[0]["layers"]]
    assert names == ["fc1", "relu1", "fc2", "relu2", "logits"]
    assert set(history[0]["layers"][0]) == {
        f.name for f in LayerStats.__dataclass_fields__.values()
    }


def test_probe_statistics_equal_activation_stats_on_the_same_batch():
    model, (x, y) = _model(), _data()
    nn.init.constant_(model.fc2.bias, -3.0)  # kill some relu2 units, so dead_fraction is > 0
    reference = {s.name: s for s in activation_stats(copy.deepcopy(model), x, y)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, sample=None) as mon:
        _train(model, opt, mon, 1, x, y)
    layers = {layer["name"]: layer for layer in mon.history[0]["layers"]}
    assert reference["relu2"].dead_fraction > 0
    for name, ref in reference.items():
        got = layers[name]
        for key in ("mean", "std", "min", "max", "grad_std", "weight_std", "weight_grad_norm"):
            expected = getattr(ref, key)
            assert (got[key] is None) == (expected is None), (name, key)
            if expected is not None:
                assert got[key] == pytest.approx(expected, rel=1e-5, abs=1e-7), (name, key)
        assert got["dead_fraction"] == ref.dead_fraction
        assert got["histogram_range"] == pytest.approx(ref.histogram_range)
        assert got["histogram"] == [int(c) for c in ref.histogram]  # torch.histc's counts
        assert not got["nonfinite"] and not got["grad_nonfinite"]


def test_update_ratio_of_sgd_is_lr_times_grad_norm_over_weight_norm_keyed_by_parameter():
    model, (x, y) = _model(), _data()
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with Monitor(model, opt, every=2) as mon:
        expected = []
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            expected.append(
                {
                    n: (lr * p.grad.norm() / p.norm()).item() if p.norm() > 0 else None
                    for n, p in model.named_parameters()
                }
            )
            opt.step()
            mon.step(loss)
    ratios = {r["step"]: r["update_ratios"] for r in mon.history if "update_ratios" in r}
    assert list(ratios) == [1, 3]
    assert ratios[1]["fc1.bias"] is None  # a zero-initialised bias has no ratio yet
    for step in (1, 3):
        assert ratios[step].keys() == expected[step - 1].keys()
        for name, value in expected[step - 1].items():
            got = ratios[step][name]
            assert got == (None if value is None else pytest.approx(value, rel=1e-4)), name
    assert ratios[3]["fc1.bias"] is not None


class _Poison:
    """A forward hook that writes NaN into one element of a layer's output at one step."""

    def __init__(self, step, example=0):
        self.step, self.example, self.calls = step, example, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.calls == self.step:
            output = output.clone()
            output[self.example, 0] = float("nan")
            return output


def test_nan_injected_into_a_layer_output_is_reported_at_that_layer_and_step():
    model, (x, y) = _model(), _data()
    model.fc2.register_forward_hook(_Poison(step=7))  # before the Monitor's own hook
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt) as mon:  # default every=10: found at the read-back of step 10
        _train(model, opt, mon, 7, x, y)
        assert not mon.should_stop  # nothing read back yet: no host sync per step
        _train(model, opt, mon, 3, x, y)
        assert mon.should_stop
    (alert,) = mon.alerts
    assert alert["guard"] == "nonfinite_loss"
    assert (alert["layer"], alert["where"], alert["onset_step"]) == ("fc2", "output", 7)
    assert "step 7" in mon.stop_reason and "output of fc2" in mon.stop_reason
    record = mon.history[6]
    assert record["step"] == 7 and record["loss"] is None and record["alerts"] == [alert]


def test_a_probe_step_marks_non_finite_layers_and_drops_their_statistics():
    model, (x, y) = _model(), _data()
    model.fc2.register_forward_hook(_Poison(step=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt) as mon:
        _train(model, opt, mon, 1, x, y)
    layers = {layer["name"]: layer for layer in mon.history[0]["layers"]}
    assert [n for n, layer in layers.items() if layer["nonfinite"]] == ["fc2", "relu2", "logits"]
    assert layers["relu2"]["mean"] is None and layers["relu2"]["histogram"] == []
    assert layers["relu1"]["mean"] is not None and layers["relu1"]["histogram"]
    assert all(layer["grad_nonfinite"] for layer in layers.values())  # from the NaN loss


class _NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class _BreakBackwardAt(nn.Module):
    """Identity forward; at one step, a NaN gradient for its input."""

    def __init__(self, step):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, x):
        self.calls += 1
        return _NanGradient.apply(x) if self.calls == self.step else x


def test_a_nan_gradient_is_reported_as_the_onset_of_the_next_steps_nan_loss():
    model, (x, y) = _model(), _data()
    model.fc2 = nn.Sequential(model.fc2, _BreakBackwardAt(step=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, layers=["fc1", "relu1", "fc2.0", "relu2", "logits"]) as mon:
        losses = _train(model, opt, mon, 6, x, y)
    assert math.isfinite(losses[3]) and math.isnan(losses[4])  # step 4 fine, step 5 NaN
    (alert,) = mon.alerts
    assert (alert["layer"], alert["where"], alert["onset_step"]) == ("fc2.0", "gradient", 4)
    assert mon.history[4]["alerts"] == [alert]
    assert "gradient w.r.t. the output of fc2.0 at step 4" in alert["message"]


def test_a_loss_that_alone_turns_nan_is_blamed_on_the_loss():
    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(logits, target):
        calls.append(1)
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if len(calls) == 3 else loss

    with Monitor(model, opt) as mon:
        _train(model, opt, mon, 4, x, y, loss_fn)
    (alert,) = mon.alerts
    assert (alert["layer"], alert["where"], alert["onset_step"]) == (None, "loss", 3)


def test_nan_outside_the_sample_is_found_only_when_the_whole_batch_is_checked():
    found = {}
    for sample in (16, None):
        model, (x, y) = _model(), _data()
        model.fc2.register_forward_hook(_Poison(step=2, example=40))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with Monitor(model, opt, sample=sample) as mon:
            _train(model, opt, mon, 3, x, y)
        found[sample] = mon.alerts[0]
    assert found[16]["where"] == "loss" and "16 sampled examples" in found[16]["message"]
    assert (found[None]["layer"], found[None]["where"]) == ("fc2", "output")


def test_nan_in_a_second_forward_of_the_same_step_is_still_caught():
    model, (x, y) = _model(), _data()
    model.fc2.register_forward_hook(_Poison(step=4))  # 2 forwards a step: step 2, 2nd pass
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, read_every=1) as mon:
        for _ in range(3):  # gradient accumulation over two half batches
            opt.zero_grad()
            total = 0
            for half in (slice(0, 32), slice(32, 64)):
                loss = nn.functional.cross_entropy(model(x[half]), y[half]) / 2
                loss.backward()
                total = total + loss.detach()
            opt.step()
            mon.step(total)
    (alert,) = mon.alerts
    assert (alert["layer"], alert["onset_step"]) == ("fc2", 2)


def test_when_only_activations_are_watched_they_are_guarded_every_step():
    model, (x, y) = _model(), _data()
    model.relu2.register_forward_hook(_Poison(step=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, layers=[nn.ReLU]) as mon:
        _train(model, opt, mon, 4, x, y)
    (alert,) = mon.alerts
    assert (alert["layer"], alert["where"], alert["onset_step"]) == ("relu2", "output", 3)


def test_loss_above_three_times_the_first_is_flagged_at_its_step():
    model = _model()
    with Monitor(model) as mon:
        for value in [2.0, 2.5, 7.0, 3.0, 9.0]:
            mon.step(torch.tensor(value))
    (alert,) = mon.alerts
    assert alert["guard"] == "loss_exploded" and alert["initial_loss"] == 2.0
    assert mon.history[2]["alerts"] == [alert]
    assert mon.stop_reason == "loss 7 exceeded 3x the initial loss 2 at step 3"


def test_stop_on_abort_ends_the_with_block_at_the_next_read_back():
    model = _model()
    reached = []
    with Monitor(model, stop_on_abort=True, read_every=2) as mon:
        for step, value in enumerate([2.0, 7.0, 3.0, 3.0, 3.0], start=1):
            mon.step(torch.tensor(value))
            reached.append(step)
    assert reached == [1]  # step 2 raised TrainingStopped, which the block swallowed
    assert mon.steps == 2 and "at step 2" in mon.stop_reason
    other = Monitor(model, stop_on_abort=True)
    with pytest.raises(TrainingStopped), other:  # another monitor's stop is not swallowed
        raise TrainingStopped("elsewhere", Monitor(model))
    assert not other.attached


def test_fit_stops_a_diverging_run_on_the_monitor_guard():
    (x, y), model = _data(256), _model()
    mon = Monitor(model, stop_on_abort=True)
    history = fit(model, (x, y), epochs=20, lr=50.0, batch_size=16, callbacks=[mon])
    assert history.stopped and history.stop_reason == mon.stop_reason
    tripped = next(r["step"] for r in mon.history if "alerts" in r)
    assert f"at step {tripped}" in mon.stop_reason
    # fit stopped at the first read-back (every 10 steps) after the guard tripped
    assert len(history.step_loss) == math.ceil(tripped / mon.every) * mon.every


def test_as_a_fit_callback_it_logs_epoch_metrics_and_removes_its_hooks():
    (x, y), (xv, yv), model = _data(128), _data(64, seed=1), _model()
    mon = Monitor(model, every=3)
    history = fit(model, (x, y), (xv, yv), epochs=2, lr=0.05, batch_size=32, callbacks=[mon])
    records = mon.history
    assert len(records) == 8 == len(history.step_loss)
    assert [r["loss"] for r in records] == pytest.approx(history.step_loss)
    end_of_epoch = [r for r in records if "epoch" in r]
    assert [r["step"] for r in end_of_epoch] == [4, 8]
    for record, metrics in zip(end_of_epoch, history.epochs, strict=True):
        assert record["val_accuracy"] == metrics["val_accuracy"]
        assert record["gap"] == pytest.approx(metrics["train_accuracy"] - metrics["val_accuracy"])
    assert "update_ratios" in records[0]  # fit's own optimizer was hooked
    assert not mon.attached
    assert not any(m._forward_hooks for m in model.modules())


def test_hooks_are_removed_on_exit_even_when_the_loop_raises():
    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="boom"), Monitor(model, opt) as mon:
        _train(model, opt, mon, 2, x, y)
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert len(mon.history) == 2  # what was measured before the error is kept


def test_forward_passes_without_grad_are_not_part_of_the_step():
    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=1) as mon:
        _train(model, opt, mon, 1, x, y)
        with torch.no_grad():
            model(torch.full_like(x, float("nan")))  # an evaluation between steps
        _train(model, opt, mon, 1, x, y)
    assert mon.alerts == []
    assert all(not layer["nonfinite"] for layer in mon.history[1]["layers"])


def test_no_host_reads_between_read_backs(monkeypatch):
    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reads = []
    with Monitor(model, opt, every=2, read_every=5) as mon:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, _name=name, **kwargs):
                reads.append(_name)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)
        for _ in range(4):  # steps 1-4, probe steps among them: nothing is read
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
        assert reads == []
        mon.step(nn.functional.cross_entropy(model(x), y))  # step 5: the read-back
        assert reads
        monkeypatch.undo()


def test_saved_history_is_strict_json_lines_with_null_for_nan(tmp_path):
    model = _model()
    with Monitor(model) as mon:
        for value in [1.0, float("nan"), float("inf")]:
            mon.step(torch.tensor(value))
    path = mon.save_jsonl(tmp_path / "run" / "history.jsonl")

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    lines = path.read_text().splitlines()
    assert [json.loads(line, parse_constant=reject)["loss"] for line in lines] == [1.0, None, None]
    assert load_history(path) == mon.history
    assert "loss became nan at step 2" in load_history(path)[1]["alerts"][0]["message"]


def test_log_adds_epoch_metrics_to_the_latest_record_and_computes_the_gap():
    model = _model()
    with Monitor(model, read_every=1) as mon:
        mon.step(torch.tensor(1.0), train_accuracy=torch.tensor(0.75))
        mon.log(val_accuracy=0.5, epoch=1)  # after the read-back
        mon.step(2.0)
        mon.log(val_accuracy=0.25)
    first, second = mon.history
    assert first == {
        "step": 1,
        "loss": 1.0,
        "train_accuracy": 0.75,
        "val_accuracy": 0.5,
        "epoch": 1,
        "gap": 0.25,
    }
    assert second == {"step": 2, "loss": 2.0, "val_accuracy": 0.25}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every must be a positive integer, got 0"),
        ({"sample": -1}, "sample must be a positive integer, got -1"),
        ({"abort_factor": 1.0}, "abort_factor must be a number > 1, got 1.0"),
        ({"layers": ["fc9"]}, "no module named fc9"),
        ({"optimizer": torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1)}, "none of the model's"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Monitor(_model(), **kwargs)


def test_bad_calls_are_usage_errors():
    model = _model()
    mon = Monitor(model)
    with pytest.raises(UsageError, match="detached Monitor"):
        mon.step(1.0)
    with mon:
        with pytest.raises(UsageError, match="before the first Monitor.step"):
            mon.log(val_accuracy=0.5)
        with pytest.raises(UsageError, match=r"shape \(4,\); pass its mean"):
            mon.step(torch.ones(4))
        with pytest.raises(UsageError, match="fraction in \\[0, 1\\], got 87.5"):
            mon.step(1.0, train_accuracy=87.5)
        mon.step(1.0)
        with pytest.raises(UsageError, match="loss cannot be logged"):
            mon.log(loss=3.0)


def test_tensorboard_files_hold_the_scalars_and_histograms(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, (x, y) = _model(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=2, log_dir=tmp_path) as mon:
        _train(model, opt, mon, 4, x, y)
        mon.log(val_accuracy=0.5, train_accuracy=0.75)
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in mon.history])
    assert [e.value for e in events.Scalars("gap")] == pytest.approx([0.25])
    ratio = events.Scalars("update_ratio/fc1.weight")
    assert [e.step for e in ratio] == [1, 3]
    assert ratio[0].value == pytest.approx(mon.history[0]["update_ratios"]["fc1.weight"])
    assert "activations/relu1" in tags["histograms"]
    (first, _) = events.Histograms("activations/relu1")
    layer = mon.history[0]["layers"][1]
    assert first.histogram_value.num == sum(layer["histogram"])
    assert first.histogram_value.max == pytest.approx(layer["max"])


def test_the_documented_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[2] / "docs" / "monitor.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/monitor.md", "exec"), namespace)
    mon = namespace["mon"]
    assert mon.stop_reason is None and mon.history[-1]["val_accuracy"] > 0.9
    assert load_history(tmp_path / "runs" / "digits" / "history.jsonl") == mon.history


def test_log_dir_without_tensorboard_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UsageError, match=r"pip install 'babysit\[tensorboard\]'"):
        Monitor(_model(), log_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_overhead_benchmark_runs_and_prints_its_ratios(capsys):
    bench = runpy.run_path(str(Path(__file__).parents[2] / "bench" / "monitor_overhead.py"))
    assert bench["main"](["--quick"]) == 0
    out = capsys.readouterr().out
    for key in ("overhead_ratio=", "overhead_ratio_every1=", "control_ratio=", "plain_step_ms="):
        assert key in out
