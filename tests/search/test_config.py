from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from babysit.errors import ConfigError
from babysit.search.config import load_config, parse_config
from babysit.search.space import Categorical, Float, Int
from babysit.search.stages import DEFAULT_STAGES, Stage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "search_digits.toml"


def test_the_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.study == "search_digits"
    assert config.data == "digits" and config.preprocess == "standardize"
    assert config.plan.space["lr"].log and config.plan.space["weight_decay"].log
    assert config.plan.stages == DEFAULT_STAGES  # spelled out, as the bench measured it
    assert config.fixed["optimizer"] == "momentum"


def test_yaml_and_toml_give_the_same_plan(tmp_path):
    import tomllib

    raw = tomllib.loads(EXAMPLE.read_text())
    path = tmp_path / "search_digits.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).plan == load_config(EXAMPLE).plan


def test_defaults_and_hyperparameter_kinds():
    config = parse_config(
        {
            "space": {
                "lr": {"low": 1e-5, "high": 1},
                "width": {"low": 16, "high": 256, "log": True},
                "dropout": {"low": 0.0, "high": 0.5},
                "activation": ["relu", "tanh"],
                "batch_norm": [True, False],
            }
        },
        default_study="mine",
    )
    assert config.study == "mine" and config.model == "mlp" and config.data == "digits"
    assert config.plan.stages == DEFAULT_STAGES
    space = config.plan.space
    assert isinstance(space["width"], Int) and isinstance(space["dropout"], Float)
    assert space["dropout"].limits == (0.0, 1.0) and space["dropout"].open_limits == (False, True)
    assert isinstance(space["batch_norm"], Categorical)


def test_promotion_false_trains_every_stage_afresh():
    space = {"lr": {"low": 1e-5, "high": 1}}
    assert any(s.promote for s in parse_config({"space": space}).plan.stages)
    off = parse_config({"space": space, "promotion": False}).plan.stages
    assert off == tuple(replace(s, promote=0) for s in DEFAULT_STAGES)
    stages = [{"trials": 4, "epochs": 1}, {"trials": 2, "epochs": 3, "promote": 2}]
    mine = parse_config({"space": space, "stages": stages, "promotion": False}).plan.stages
    assert mine == (Stage(4, epochs=1), Stage(2, epochs=3))
    with pytest.raises(ConfigError, match="promotion must be true or false, got 'no'"):
        parse_config({"space": space, "promotion": "no"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("space = {lr = {low = 1e-3, high = 1e-1}\n", "malformed TOML"),
        (
            '[space]\nlr = { low = 1e-3, high = 1e-1 }\ncolour = ["red"]\n',
            "unknown hyperparameter 'colour'",
        ),
        ("[space]\nlr = { low = 1e-1, high = 1e-3 }\n", "needs low < high"),
        ("[space]\nlr = { low = 0.0, high = 1e-3 }\n", "positive bounds"),
        ("[space]\nmomentum = { low = 0.5, high = 1.5 }\n", "allowed"),
        ("[space]\ndropout = { low = 0.0, high = 1.0 }\n", r"allowed range \[0, 1\)"),
        ("[space]\nwidth = { low = 8.5, high = 64.0 }\n", "width takes integers"),
        ('[space]\nactivation = ["relu", "swish2"]\n', "activation = 'swish2' is not allowed"),
        ("[space]\nactivation = { low = 1, high = 3 }\n", "activation is a choice"),
        ("bogus = 1\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n", "unknown key 'bogus'"),
        (
            'preprocess = "normalize"\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n',
            "unknown preprocess",
        ),
        (
            "[fixed]\nlr = 0.1\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n",
            r"both in \[fixed\] and in \[space\]",
        ),
        ("[fixed]\nwidth = 0\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n", "width = 0 is outside"),
        (
            '[fixed]\noptimizer = "lbfgs"\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n',
            "optimizer = 'lbfgs'",
        ),
        ("[fixed]\nwidth = 8\n", r"no \[space\]"),
        (
            "[space]\nlr = { low = 1e-3, high = 1e-1 }\n[[stages]]\ntrials = 2\n",
            "stage 1: a stage needs exactly one budget",
        ),
        (
            "[space]\nlr = { low = 1e-3, high = 1e-1 }\n[narrowing]\npad = 2\n",
            "pad must be a fraction",
        ),
        (
            "[space]\nlr = { low = 1e-3, high = 1e-1 }\n[narrowing]\nwiden = 1\n",
            "widen must be true or false",
        ),
        (
            'model = "nosuchmodule:net"\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n',
            "cannot import model module",
        ),
        ("seed = 0.5\n[space]\nlr = { low = 1e-3, high = 1e-1 }\n", "seed must be an integer"),
    ],
)
def test_bad_configs_are_one_line_errors_that_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_malformed_yaml_and_unknown_suffix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    other = tmp_path / "search.json"
    other.write_text("{}")
    with pytest.raises(ConfigError, match=r"must end in .toml, .yaml or .yml"):
        load_config(other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="table of keys"):
        load_config(listed)


def test_a_model_of_ones_own_may_have_its_keyword_arguments_searched(tmp_path):
    module = tmp_path / "mynet.py"
    module.write_text(
        "import torch.nn as nn\n"
        "def net(input_shape, classes, hidden=32, slope=0.01):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(8, hidden),"
        " nn.LeakyReLU(slope), nn.Linear(hidden, classes))\n"
    )
    spec = f"{module}:net"
    config = parse_config(
        {
            "model": spec,
            "data": "synthetic:n=60,shape=8,classes=3",
            "space": {"hidden": {"low": 4, "high": 16}, "lr": {"low": 1e-3, "high": 1e-1}},
            "fixed": {"slope": 0.2},
        }
    )
    objective = config.objective()
    model = objective.build(objective.hyperparameters({"hidden": 5, "lr": 0.01}))
    assert model[1].out_features == 5 and model[2].negative_slope == 0.2
    with pytest.raises(ConfigError, match="unknown hyperparameter 'width' for .*mynet.py:net"):
        parse_config({"model": spec, "space": {"width": {"low": 4, "high": 16}}})


def test_yaml_reads_1e_minus_3_as_a_number_as_toml_does(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "space:\n  lr: {low: 1e-6, high: 1E+1}\n  weight_decay: {low: 2.5e-7, high: 1}\n"
        "  dropout: {low: 0, high: 5e-1}\nstages:\n  - {trials: 3, epochs: 1}\n"
        "fixed:\n  momentum: 9e-1\n"
    )
    config = load_config(path)
    lr = config.plan.space["lr"]
    assert (lr.low, lr.high, lr.log) == (1e-6, 10.0, True)
    assert config.plan.space["weight_decay"].low == 2.5e-7
    assert config.plan.space["dropout"].high == 0.5 and config.fixed["momentum"] == 0.9
    assert load_config(path).plan.space == _toml_twin(tmp_path).plan.space


def _toml_twin(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(
        "[space]\nlr = {low = 1e-6, high = 1E+1}\nweight_decay = {low = 2.5e-7, high = 1}\n"
        "dropout = {low = 0, high = 5e-1}\n[[stages]]\ntrials = 3\nepochs = 1\n"
    )
    return load_config(path)
