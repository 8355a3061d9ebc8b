import math

import pytest

from babysit.errors import ConfigError
from babysit.search.space import (
    EDGE_FRACTION,
    PAD_FRACTION,
    WIDEN_FRACTION,
    Categorical,
    Float,
    Int,
    Narrowing,
    narrow,
    parse_space,
    space_from_json,
    space_to_json,
    with_limits,
)


def test_lr_and_weight_decay_are_log_uniform_by_default_and_others_linear():
    space = parse_space(
        {
            "lr": {"low": 1e-6, "high": 10},
            "weight_decay": {"low": 1e-6, "high": 1},
            "momentum": {"low": 0.5, "high": 0.99},
            "width": {"low": 16, "high": 512, "log": True},
            "activation": ["relu", "tanh"],
        }
    )
    assert space["lr"] == Float(1e-6, 10.0, log=True)
    assert space["weight_decay"].log
    assert space["momentum"] == Float(0.5, 0.99, log=False)
    assert space["width"] == Int(16, 512, log=True)
    assert space["activation"] == Categorical(("relu", "tanh"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lr": {"low": 1.0, "high": 1.0}}, "low < high"),
        ({"lr": {"low": 2.0, "high": 1.0}}, "low = 2.0, high = 1.0"),
        ({"lr": {"low": 0.0, "high": 1.0}}, "log-scale range needs positive bounds"),
        ({"x": {"low": -1.0, "high": 1.0, "log": True}}, "positive bounds"),
        ({"lr": {"low": 1e-3}}, "needs both low and high"),
        ({"lr": {"low": 1e-3, "high": 1, "scale": "log"}}, "unknown key 'scale'"),
        ({"lr": {"low": "a", "high": 1}}, "finite numbers"),
        ({"lr": {"low": 1e-3, "high": math.inf}}, "finite numbers"),
        ({"lr": {"low": 1e-3, "high": 1, "log": "yes"}}, "log must be true or false"),
        ({"width": {"low": 1.5, "high": 4, "type": "int"}}, "integer bounds"),
        ({"activation": []}, "at least one value"),
        ({"activation": ["relu", "relu"]}, "distinct"),
        ({"lr": 0.1}, "expected a range"),
        ({}, "empty"),
    ],
)
def test_bad_ranges_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_space(spec)
    assert "\n" not in str(info.value)


def test_narrowing_takes_the_top_trials_span_padded_by_a_tenth_of_the_old_log_span():
    space = {"lr": Float(1e-6, 10.0, log=True)}
    ranked = [{"lr": v} for v in (1e-2, 1e-3, 1e-1, 1e-5, 3e-6)]  # best first; top 3 of 5
    new, warnings = narrow(space, space, ranked)
    pad = PAD_FRACTION * 7  # the old span is 7 decades
    assert new["lr"].log
    assert math.log10(new["lr"].low) == pytest.approx(-3 - pad)
    assert math.log10(new["lr"].high) == pytest.approx(-1 + pad)
    assert warnings == []


def test_top_k_is_twenty_percent_of_completed_trials_but_at_least_three():
    settings = Narrowing()
    assert [settings.top_count(n) for n in (1, 2, 3, 10, 15, 16, 40)] == [1, 2, 3, 3, 3, 4, 8]


def test_a_margin_keeps_every_trial_about_as_good_as_the_best_in_the_good_region():
    # 10 trials, best first: five within 0.02 of the best 0.97, five far below (median 0.72)
    values = [0.97, 0.965, 0.96, 0.955, 0.95, 0.5, 0.3, 0.2, 0.15, 0.1]
    lrs = [1e-2, 3e-2, 1e-1, 1e-3, 3e-1, 1e-5, 3e-6, 5, 8, 2e-6]
    space = {"lr": Float(1e-6, 10.0, log=True)}
    ranked = [{"lr": v} for v in lrs]
    gap = values[0] - 0.5 * (values[4] + values[5])  # best - median
    assert Narrowing().top_count(10, values) == 3  # off by default: the top k only
    settings = Narrowing(margin=0.1)
    assert sum(values[0] - v <= 0.1 * gap for v in values) == 5
    assert settings.top_count(10, values) == 5
    new, _ = narrow(space, space, ranked, settings, values)
    pad = PAD_FRACTION * 7
    assert math.log10(new["lr"].low) == pytest.approx(-3 - pad)  # 1e-3 and 3e-1 kept
    assert math.log10(new["lr"].high) == pytest.approx(math.log10(0.3) + pad)
    top_k, _ = narrow(space, space, ranked, Narrowing(), values)  # 1e-2 .. 1e-1 only
    assert math.log10(top_k["lr"].low) == pytest.approx(-2 - pad)
    assert math.log10(top_k["lr"].high) == pytest.approx(-1 + pad)
    flat = [0.9] * 10  # every trial as good as the best: no information, the span of all
    assert settings.top_count(10, flat) == 10
    assert Narrowing(margin=0.1).top_count(10, values[:1] * 2 + values[5:]) == 3  # top_min


def test_narrowing_is_clipped_to_the_original_range():
    original = {"lr": Float(1e-4, 1.0, log=True)}
    ranked = [{"lr": 0.9}, {"lr": 0.5}, {"lr": 0.2}]
    new, _ = narrow(original, original, ranked)
    assert new["lr"].high == pytest.approx(1.0)
    assert new["lr"].low == pytest.approx(10 ** (math.log10(0.2) - PAD_FRACTION * 4))


def test_best_at_an_edge_warns_naming_the_parameter_and_the_direction():
    space = {
        "lr": Float(1e-6, 10.0, log=True),
        "weight_decay": Float(1e-6, 1.0, log=True),
    }
    # best lr 2e-6 sits 0.3 decades above the low edge: within 10% of 7 decades
    ranked = [{"lr": 2e-6, "weight_decay": 1e-3}, {"lr": 1e-3, "weight_decay": 1e-3}]
    _, warnings = narrow(space, space, ranked)
    assert [(w.param, w.side) for w in warnings] == [("lr", "low")]
    message = warnings[0].message
    assert "lr" in message and "low edge" in message and "downwards" in message
    expected = 10 ** (-6 - WIDEN_FRACTION * 7)
    assert warnings[0].suggestion == pytest.approx(expected)


def test_no_warning_just_outside_the_edge_margin():
    space = {"momentum": Float(0.0, 1.0)}
    inside = 1.0 - EDGE_FRACTION * 0.99
    outside = 1.0 - EDGE_FRACTION * 1.01
    assert narrow(space, space, [{"momentum": inside}])[1][0].side == "high"
    assert narrow(space, space, [{"momentum": outside}])[1] == []


def test_no_warning_towards_a_hard_limit_of_the_hyperparameter():
    space = with_limits({"dropout": Float(0.0, 0.5)}, {"dropout": ((0.0, 1.0), (False, True))})
    _, warnings = narrow(space, space, [{"dropout": 0.01}, {"dropout": 0.2}])
    assert warnings == []  # dropout cannot go below 0: nothing to widen


def test_auto_widen_moves_the_edge_outwards_beyond_the_original_range():
    space = {"lr": Float(1e-4, 1e-1, log=True)}
    ranked = [{"lr": 9e-2}, {"lr": 5e-2}, {"lr": 1e-2}]
    new, warnings = narrow(space, space, ranked, Narrowing(widen=True))
    assert warnings[0].side == "high"
    assert math.log10(new["lr"].high) == pytest.approx(-1 + WIDEN_FRACTION * 3)
    # the other side narrows as usual
    assert math.log10(new["lr"].low) == pytest.approx(-2 - PAD_FRACTION * 3)
    # and a later stage may keep what the widening gained
    again, _ = narrow(new, space, [{"lr": 0.2}, {"lr": 0.1}, {"lr": 0.05}])
    assert again["lr"].high > 0.1


def test_widening_stops_half_way_to_an_open_limit():
    space = with_limits({"dropout": Float(0.2, 0.9)}, {"dropout": ((0.0, 1.0), (False, True))})
    new, _ = narrow(space, space, [{"dropout": 0.89}], Narrowing(widen=True))
    assert new["dropout"].high == pytest.approx(0.95)


def test_integer_ranges_round_outwards():
    space = {"width": Int(16, 512, log=True)}
    ranked = [{"width": 100}, {"width": 60}, {"width": 130}]
    new, _ = narrow(space, space, ranked)
    span = math.log10(512 / 16)
    assert new["width"].low == math.floor(10 ** (math.log10(60) - PAD_FRACTION * span))
    assert new["width"].high == math.ceil(10 ** (math.log10(130) + PAD_FRACTION * span))
    assert isinstance(new["width"].low, int)


def test_categoricals_keep_the_values_of_the_top_trials():
    space = {"activation": Categorical(("relu", "tanh", "sigmoid", "elu"))}
    ranked = [{"activation": a} for a in ("elu", "relu", "elu", "sigmoid", "tanh")]
    new, warnings = narrow(space, space, ranked)
    assert new["activation"].choices == space["activation"].choices  # fixed for the study
    assert new["activation"].kept == ("relu", "elu")
    assert warnings == []


def test_booleans_and_integers_are_distinct_categorical_values():
    space = {"flag": Categorical((True, 1, False))}
    new, _ = narrow(space, space, [{"flag": 1}, {"flag": 1}, {"flag": 1}])
    assert new["flag"].kept == (1,)


def test_no_completed_trial_leaves_the_space_as_it_is():
    space = {"lr": Float(1e-6, 10.0, log=True)}
    assert narrow(space, space, []) == (space, [])


def test_space_json_round_trip():
    space = with_limits(
        parse_space(
            {
                "lr": {"low": 1e-6, "high": 10},
                "width": {"low": 16, "high": 512, "log": True},
                "dropout": {"low": 0.0, "high": 0.5},
                "act": ["relu", "tanh"],
            }
        ),
        {"dropout": ((0.0, 1.0), (False, True))},
    )
    space["act"] = Categorical(("relu", "tanh"), kept=("tanh",))
    assert space_from_json(space_to_json(space)) == space


def test_one_narrowing_table_round_trips_through_config_plan_and_study():
    from babysit.search.config import parse_config
    from babysit.search.plan import Plan

    table = {"top": 0.3, "top_min": 4, "pad": 0.05, "edge": 0.2, "widen": True, "margin": 0.5}
    narrowing = Narrowing.from_dict(table)
    assert narrowing == Narrowing(0.3, 4, 0.05, 0.2, True, 0.5) and narrowing.to_dict() == table
    config = parse_config({"space": {"lr": {"low": 1e-4, "high": 1.0}}, "narrowing": table})
    assert config.plan.narrowing == narrowing
    assert Plan.from_json(config.plan.to_json()).narrowing == narrowing
    assert Narrowing.from_dict({"pad": 0.2}) == Narrowing(pad=0.2)
    assert "margin" not in Narrowing().to_dict()  # off: the table of a study stored before it
    for bad, message in [
        ({"top_min": 2.5}, "top_min must be an integer"),
        ({"widen": 1}, "widen must be true or false"),
        ({"pad": "x"}, "pad must be a number"),
        ({"span": 1}, "unknown key 'span'"),
        ({"margin": 2}, r"margin must be a fraction in \[0, 1\]"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Narrowing.from_dict(bad)
