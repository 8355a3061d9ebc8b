"""docs/lab.md stays in step with the code: a section per experiment quoting every claim, and
the README picture."""

from pathlib import Path

import pytest

from babysit.lab import EXPERIMENTS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lab.md"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_docs_describe_each_experiment_and_quote_its_claims(tiny, name):
    docs = DOCS.read_text()
    assert f"### {name}" in docs
    for claim in tiny(name).claims:
        assert claim.text in docs, claim.text


def test_docs_picture_is_small_enough_for_the_readme():
    picture = DOCS.parent / "img" / "lab-init.png"
    assert picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size < 200_000
    assert "img/lab-init.png" in DOCS.read_text()
