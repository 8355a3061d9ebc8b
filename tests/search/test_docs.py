"""Every Python example in docs/search.md runs as written (they go into the README)."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "search.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_an_example():
    assert EXAMPLES


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_doc_example_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes its study file to the working directory
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    result = namespace["result"]
    assert result.done and [s.complete + s.pruned for s in result.stages] == [8, 3]
    assert (tmp_path / "digits_search.db").exists()
    assert str(result.best_value) in capsys.readouterr().out


def test_the_config_shown_in_the_doc_is_valid(tmp_path):
    from babysit.search.config import load_config

    (toml,) = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    path = tmp_path / "doc.toml"
    path.write_text(toml)
    config = load_config(path)
    assert [s.trials for s in config.plan.stages] == [20, 4]
    assert set(config.plan.space) == {"lr", "weight_decay", "width", "dropout", "activation"}
