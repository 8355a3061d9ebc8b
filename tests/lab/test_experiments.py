"""The registry is a scan of babysit.lab.experiments: a new module is a new experiment, in its
ORDER, and the base gives its run the settings, seeds, device and progress of the scale."""

import pkgutil
import sys
import textwrap

import pytest

from babysit.lab import EXPERIMENTS, experiments
from babysit.lab.experiments import discover

_MODULE = '''
"""{name}: checks that {name} works.

More words that are not the description.
"""

from babysit.lab.base import Claim

TITLE = "{name} title"
ORDER = {order}
SETTINGS = {{
    "tiny": {{"seeds": 2, "steps": 1}},
    "small": {{"seeds": 3, "steps": 2}},
    "full": {{"seeds": 4, "steps": 3}},
}}


def run(setup):
    tick = setup.ticker(len(setup.seeds))
    for seed in setup.seeds:
        tick(f"seed {{seed}}")
    claim = Claim("it works", "us", "x", str(setup.settings["steps"]), True)
    return setup.result(summary="s", setting=str(setup.device), claims=[claim], data={{}})


def figures(data):
    return []
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """make(modules) -> the name of a fresh package holding them ({file stem: source})."""
    made = []

    def make(modules: dict[str, str]) -> str:
        name = f"fake_lab_{len(made)}_{id(tmp_path)}"
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for stem, source in modules.items():
            (folder / f"{stem}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for key in [k for k in sys.modules if any(k.split(".")[0] == m for m in made)]:
        del sys.modules[key]


def test_every_module_of_the_package_is_registered_and_nothing_else():
    files = {m.name for m in pkgutil.iter_modules(experiments.__path__)}
    assert set(EXPERIMENTS) == files
    assert EXPERIMENTS["init"].description.startswith("the lecture's own experiment.")


def test_a_new_module_is_a_new_experiment_in_its_order_with_the_common_opening(package):
    name = package(
        {
            "zeta": _MODULE.format(name="zeta", order=1),
            "alpha": _MODULE.format(name="alpha", order=2),
            "_helpers": "X = 1\n",  # private modules are not experiments
        }
    )
    found = discover(name)
    assert list(found) == ["zeta", "alpha"]  # by ORDER, not by file name
    zeta = found["zeta"]
    assert (zeta.title, zeta.description) == ("zeta title", "checks that zeta works.")
    seen = []
    result = zeta(scale="tiny", seed=5, progress=lambda *a: seen.append(a))
    assert (result.name, result.title, result.scale, result.seeds) == (
        "zeta",
        "zeta title",
        "tiny",
        [5, 6],
    )
    assert result.claims[0].measured == "1" and result.setting == "cpu"
    assert seen == [(1, 2, "seed 5"), (2, 2, "seed 6")]
    assert result.device == "cpu" and result.seconds >= 0
    assert zeta.figures({}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.replace("def figures(data):", "def drawings(data):"), r"define figures\(\)"),
        (lambda s: s.replace("ORDER = 1", "ORDER = 'first'"), r"define ORDER"),
        (
            lambda s: s.replace('"""broken: checks', '"""Checks'),
            "docstring must open with 'broken: '",
        ),
        (lambda s: s.replace('"steps": 3}', '"step": 3}'), "SETTINGS must have one dict per scale"),
    ],
)
def test_a_module_missing_a_part_is_refused_with_what_it_lacks(package, change, message):
    name = package({"broken": change(_MODULE.format(name="broken", order=1))})
    with pytest.raises(TypeError, match=f"{name}.broken: .*{message}"):
        discover(name)
