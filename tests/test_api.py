"""The public API of DESIGN.md: names exported lazily by `import babysit`."""

import subprocess
import sys

import babysit as bs


def test_public_names_resolve_to_what_design_promises():
    from babysit.checks.findings import Finding
    from babysit.data.datasets import load_data
    from babysit.doctor import checkup
    from babysit.report.report import Report
    from babysit.train.monitor import Monitor

    assert bs.checkup is checkup and bs.load_data is load_data and bs.Monitor is Monitor
    assert bs.Report is Report and bs.Finding is Finding
    assert bs.search.__name__ == "search" and bs.search.__module__ == "babysit"
    assert callable(bs.nn.mlp) and callable(bs.data.preprocess.Standardize)


def test_importing_submodules_keeps_the_api_callable():
    import babysit.doctor  # noqa: F401
    import babysit.search.study  # noqa: F401  (used to bind babysit.search to the package)
    from babysit.search import Stage  # noqa: F401

    assert callable(bs.checkup) and bs.checkup.__name__ == "checkup"
    assert bs.search.__name__ == "search" and bs.search.__module__ == "babysit"
    assert type(bs.search).__name__ == "function"  # not a module made callable by a patch


def test_import_babysit_stays_light():
    # The CLI and `import babysit` should not pay for Optuna and matplotlib up front.
    code = "import sys, babysit; print('optuna' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
