"""The Monitor on a torch.compile'd model: no graph break, no recompilation, probes taken
outside the graph. Compiling takes a while on a CPU, so these are marked slow."""

import pytest
import torch
from torch import nn

from babysit.train import Monitor


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


@pytest.mark.slow
def test_a_compiled_model_is_probed_outside_its_graph_without_recompiling():
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _net()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    with Monitor(compiled, opt, every=3, sample=8) as mon:
        for _ in range(7):
            loss = nn.functional.cross_entropy(compiled(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
    stats = torch._dynamo.utils.counters["stats"]
    assert stats["unique_graphs"] == 1  # one graph: the hooks neither broke nor re-triggered it
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    history = mon.history
    probes = [r for r in history if "layers" in r]
    assert [r["step"] for r in probes] == [1, 4, 7]
    assert [layer["name"] for layer in probes[0]["layers"]] == ["0", "1", "3"]  # no _orig_mod.
    # the eager probe equals the layer on the sample, after the step's update
    first = probes[-1]["layers"][0]
    with torch.no_grad():
        expected = model[0](x[:8])
    assert first["mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert [r["step"] for r in history if "update_ratios" in r] == [1, 4, 7]
    assert mon.report().codes == [] or all(f.severity == "info" for f in mon.report().findings)


@pytest.mark.slow
def test_a_compiled_attention_gets_its_roles_from_the_eager_probe_without_recompiling():
    """Inside the compiled graph the role hooks record nothing; the first step's eager probe
    gives the attention group and the normalized layers, and the graph is compiled once."""
    import sys
    from pathlib import Path

    import torch._dynamo

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))
    import zoo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = zoo.TokenEncoder(std=0.02)
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ids, labels = zoo.token_labels(32, vocab=20)
    with Monitor(compiled, opt, every=2, sample=8) as mon:
        for _ in range(4):
            loss = nn.functional.cross_entropy(compiled(ids), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    history = mon.history
    assert history[0]["roles"]["attention"] == {
        "attention": ["attention.query.weight", "attention.key.weight", "attention.value.weight"]
    }
    assert "tok.weight" in history[0]["roles"]["normalized"]
    assert [r["step"] for r in history if "update_ratio_groups" in r] == [1, 3]
