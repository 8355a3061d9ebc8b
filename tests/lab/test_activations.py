import torch
from torch import nn

from babysit.lab.experiments import activations
from babysit.lab.experiments.activations import _mean_activations
from babysit.nn import mlp


def test_tiny_run_covers_the_seven_activations_each_at_a_grid_rate(tiny):
    result = tiny("activations")
    table = result.data["table"]
    assert [row["activation"] for row in table] == list(activations.ACTIVATIONS)
    lrs = activations.SETTINGS["tiny"]["lrs"]
    assert all(row["lr"] in lrs for row in table)
    assert set(result.data["tuning"]["relu"]) == {f"{lr:g}" for lr in lrs}
    assert len(result.claims) == 4


def test_elu_mean_activation_is_closer_to_zero_than_relu_even_at_tiny_scale(tiny, claim):
    assert claim(tiny("activations"), "ELU's mean activation").passed


def test_mean_activations_agrees_with_a_direct_computation():
    torch.manual_seed(0)
    model = mlp(8, [5, 4], 3, "relu", "he")
    x = torch.randn(32, 8)
    h1 = torch.relu(model.fc1(x))
    h2 = torch.relu(model.fc2(h1))
    expected = [h1.mean().item(), h2.mean().item()]
    assert torch.allclose(torch.tensor(_mean_activations(model, x)), torch.tensor(expected))
    assert model.training  # the mode is restored


def test_mean_activations_reads_maxout_units():
    torch.manual_seed(0)
    model = mlp(8, [6], 3, "maxout", "he")
    x = torch.randn(16, 8)
    expected = model.fc1(x).unflatten(1, (6, 2)).amax(2).mean().item()
    assert abs(_mean_activations(model, x)[0] - expected) < 1e-6
    assert isinstance(model.maxout1, nn.Module)
