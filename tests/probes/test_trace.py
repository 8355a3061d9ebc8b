import torch
from torch import nn

from babysit.probes.trace import MODEL_INPUT, trace


def test_trace_links_each_call_to_the_module_that_produced_its_input():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    t = trace(model, torch.randn(5, 4))
    assert [c.name for c in t.calls] == ["0", "1", "2"]
    assert t.calls[0].sources == [MODEL_INPUT]
    assert t.calls[1].sources == [0] and t.calls[2].sources == [1]  # in-place ReLU included
    assert t.output_call().name == "2"
    assert t.output.shape == (5, 2)
    assert t.first_weight_input.shape == (5, 4)


def test_a_functional_op_breaks_the_chain_rather_than_guessing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    t = trace(Net(), torch.randn(3, 4))
    assert t.calls[1].sources == [None]
    assert t.previous_real(1) is None


def test_trace_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, torch.randn(16, 4) * 5 + 3)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
