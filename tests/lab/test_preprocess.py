import torch
from torch import nn

from babysit.lab.experiments import preprocess
from babysit.lab.experiments.preprocess import _as_raw, _loss_change
from babysit.nn import mlp


def test_tiny_run_trains_all_four_inputs_and_probes_raw_against_centred(tiny):
    result = tiny("preprocess")
    assert [row["input"] for row in result.data["table"]] == list(preprocess.TRANSFORMS)
    sensitivity = result.data["sensitivity"]
    assert set(sensitivity) == {"raw", "centred"}
    assert all(len(row) == len(preprocess.EPSILONS) for row in sensitivity["raw"])
    assert len(result.claims) == 2


def test_raw_version_computes_the_same_function():
    torch.manual_seed(0)
    model = mlp(6, [5], 3, "relu", "he")
    x = torch.rand(20, 6) * 16
    mean = x.mean(dim=0)
    raw = _as_raw(model, mean)
    assert torch.allclose(raw(x), model(x - mean), atol=1e-5)
    assert model.fc1.bias.abs().sum() == 0  # the original is untouched (He init: zero bias)


def test_loss_change_is_zero_for_no_change_and_grows_with_the_change():
    torch.manual_seed(0)
    model = mlp(6, [5], 3, "relu", "he")
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    before = [p.clone() for p in model.parameters()]
    assert _loss_change(model, x, y, 0.0, 3, seed=0) == 0.0
    small = _loss_change(model, x, y, 1e-3, 8, seed=0)
    large = _loss_change(model, x, y, 1e-1, 8, seed=0)
    assert 0 < small < large
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )  # restored


def test_offset_inputs_make_the_same_function_more_sensitive():
    # The lecture's picture, in closed form: a linear layer W x + b written for centred data
    # moves by dW (x - mu), written for raw data by dW x; with mu far from 0 the second is larger.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(200, 4) + 5.0
    y = torch.randint(0, 3, (200,))
    mean = x.mean(dim=0)
    centred = _loss_change(model, x - mean, y, 1e-2, 20, seed=0)
    raw = _loss_change(_as_raw(model, mean), x, y, 1e-2, 20, seed=0)
    assert raw > 2 * centred
