"""The Python examples of docs/checkup.md's "Real models" section run as written."""

import re
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkup.md"
SECTION = DOC.read_text().split("## Real models", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"```python\n(.*?)```", SECTION, flags=re.DOTALL)


def test_the_section_has_a_resnet_and_a_gpt2_example():
    assert len(EXAMPLES) == 2
    assert "resnet" in EXAMPLES[0] and "GPT2LMHeadModel" in EXAMPLES[1]


@pytest.mark.parametrize("code", EXAMPLES, ids=["resnet", "gpt2"])
def test_doc_example_runs(code, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        exec(compile(code, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    if "resnet" in code:
        assert printed.strip() == "['LR_SUGGESTION']"
