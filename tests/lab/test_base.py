import json
import math
from itertools import combinations

import pytest
import torch

from babysit.errors import UsageError
from babysit.lab import EXPERIMENTS, resolve, run
from babysit.lab.base import Claim, Experiment, Result, Ticker, fmt, separated, spread


def _result(name="fake", passed=True, exception=""):
    claim = Claim("a claim", "a source", "x < 1", "x = 0.5", passed, exception, {"x": 0.5})
    return Result(name, "title", "summary", "setting", "tiny", [0], [claim], {"curve": [1, 2]})


def test_spread_is_median_and_range():
    s = spread([3, 1, 2, 10])
    assert (s.median, s.low, s.high) == (2.5, 1, 10)
    assert fmt(s) == "2.5 [1, 10]"
    assert fmt(spread([math.inf])) == "inf"


def test_separated_is_an_exact_permutation_test_at_five_percent_for_three_seeds():
    # Under no difference, every split of 6 exchangeable values into 3 + 3 is equally likely;
    # "all of A below all of B" happens for exactly one of the C(6, 3) = 20 splits.
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    hits = sum(
        separated([values[i] for i in a], [v for i, v in enumerate(values) if i not in a])
        for a in combinations(range(6), 3)
    )
    assert hits == 1
    assert not separated([1, 2], [2, 3])  # touching ranges are not apart


def test_claim_verdicts_and_known_failures():
    assert _result(passed=True).ok
    assert not _result(passed=False).ok
    known = _result(passed=False, exception="needs CIFAR-10")
    assert known.ok and known.claims[0].known_failure and known.claims[0].verdict == "FAIL"
    assert not _result(passed=True, exception="x").claims[0].known_failure


def test_claim_turns_tensor_bools_into_plain_bools():
    c = Claim("t", "s", "e", "m", torch.tensor(True))
    assert c.passed is True
    json.dumps(c.passed)


def test_result_round_trips_through_json():
    r = _result(passed=False, exception="why")
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r


def test_experiment_rejects_a_bad_scale_or_seed_with_a_usage_error():
    experiment = EXPERIMENTS["init"]
    with pytest.raises(UsageError, match="unknown lab scale 'huge'; choose one of tiny"):
        experiment(scale="huge")
    with pytest.raises(UsageError, match="seed must be an integer >= 0, got -1"):
        experiment(seed=-1)
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        experiment(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            experiment(device="cuda")


def test_experiment_records_time_and_device_and_restores_threads():
    before = torch.get_num_threads()

    def function(scale, seed, device, progress):
        assert torch.get_num_threads() == 1  # small models run fastest on one CPU thread
        progress(1, 1, "done")
        return _result()

    calls = []
    result = Experiment("fake", "t", function)(progress=lambda *a: calls.append(a))
    assert torch.get_num_threads() == before
    assert result.device == "cpu" and result.seconds >= 0 and result.cpu_seconds >= 0
    assert calls == [(1, 1, "done")]


def test_ticker_counts_and_caps_at_its_total():
    seen = []
    tick = Ticker(2, lambda d, t, w: seen.append((d, t, w)))
    for what in "abc":
        tick(what)
    assert seen == [(1, 2, "a"), (2, 2, "b"), (2, 2, "c")]


def test_resolve_names():
    assert resolve("all") == list(EXPERIMENTS)
    assert resolve(["depth", "init", "depth"]) == ["depth", "init"]
    assert list(EXPERIMENTS) == [
        "init",
        "depth",
        "activations",
        "preprocess",
        "batchnorm",
        "babysitting",
        "search",
        "lsuv",
    ]
    with pytest.raises(UsageError, match="unknown lab experiment 'nope'; choose one of init"):
        resolve(["init", "nope"])


def test_run_reports_progress_by_name_and_hands_each_result_over(monkeypatch):
    def function(scale, seed, device, progress):
        progress(1, 2, "half")
        return _result()

    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("fake", "t", function))
    seen, results = [], []
    out = run(["fake"], scale="tiny", progress=lambda *a: seen.append(a), on_result=results.append)
    assert out == results and out[0].name == "fake"
    assert seen == [("fake", 1, 2, "half")]
    with pytest.raises(UsageError, match="unknown lab scale"):
        run(["fake"], scale="medium")


def test_fmt_numbers():
    assert fmt(0.000123456) == "0.000123"
    assert fmt(12) == "12"
    assert fmt(None) == "-"
    assert fmt(float("nan")) == "nan"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_scale_sets_the_same_knobs(name):
    import importlib

    settings = importlib.import_module(f"babysit.lab.experiments.{name}").SETTINGS
    assert set(settings) == {"tiny", "small", "full"}
    assert len({frozenset(s) for s in settings.values()}) == 1  # full runs the same code paths


def test_below_passes_only_when_the_lower_range_is_entirely_below_and_keeps_the_medians():
    from babysit.lab.base import below

    plain, bn = spread([30, 40, 50]), spread([10, 20, 29])
    assert below({"plain": plain, "bn": bn}, lower="bn") == {
        "passed": True,
        "values": {"plain": 40.0, "bn": 20.0},
    }
    overlapping = spread([10, 20, 31])
    assert below({"plain": plain, "bn": overlapping}, lower="bn")["passed"] is False
    assert below({"plain": plain, "bn": bn}, lower="plain")["passed"] is False
    with pytest.raises(ValueError, match="two named spreads"):
        below({"plain": plain}, lower="bn")
