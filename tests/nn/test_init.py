import math

import pytest
import torch
from torch import nn

from babysit.nn import apply_init, fans, lsuv_, mlp
from babysit.nn.init import (
    LSUV_TOLERANCE,
    he_normal_,
    orthogonal_,
    small_,
    xavier_normal_,
    xavier_uniform_,
)


def _same_draw(ours, theirs, shape, seed=0):
    """Both init functions on equal tensors from the same generator state."""
    a, b = torch.empty(shape), torch.empty(shape)
    ours(a, torch.Generator().manual_seed(seed))
    theirs(b, torch.Generator().manual_seed(seed))
    return a, b


@pytest.mark.parametrize("fan_in", [16, 100, 784, 2048])
def test_empirical_std_matches_formula(fan_in):
    torch.manual_seed(fan_in)
    w = torch.empty(1000, fan_in)
    assert small_(w).std().item() == pytest.approx(0.01, rel=0.02)
    assert xavier_normal_(w).std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.02)
    assert he_normal_(w).std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    bound = math.sqrt(6 / (fan_in + 1000))
    assert xavier_uniform_(w).std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_fans_of_linear_and_conv_weights():
    assert fans(torch.empty(30, 20)) == (20, 30)
    assert fans(torch.empty(16, 3, 5, 5)) == (75, 400)
    with pytest.raises(ValueError, match="shape"):
        fans(torch.empty(5))


@pytest.mark.parametrize("shape", [(64, 32), (32, 16, 3, 3)])
def test_agrees_with_torch_nn_init_draw_for_draw(shape):
    # The lecture's Xavier (std 1/sqrt(fan_in)) is Kaiming with a linear gain in torch.
    a, b = _same_draw(
        lambda w, g: xavier_normal_(w, generator=g),
        lambda w, g: nn.init.kaiming_normal_(w, nonlinearity="linear", generator=g),
        shape,
    )
    torch.testing.assert_close(a, b)
    a, b = _same_draw(
        lambda w, g: xavier_normal_(w, mode="fan_avg", generator=g),
        lambda w, g: nn.init.xavier_normal_(w, generator=g),
        shape,
    )
    torch.testing.assert_close(a, b)
    a, b = _same_draw(
        lambda w, g: he_normal_(w, generator=g),
        lambda w, g: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g),
        shape,
    )
    torch.testing.assert_close(a, b)
    a, b = _same_draw(
        lambda w, g: he_normal_(w, mode="fan_out", generator=g),
        lambda w, g: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=g),
        shape,
    )
    torch.testing.assert_close(a, b)
    a, b = _same_draw(
        lambda w, g: orthogonal_(w, gain=2.0, generator=g),
        lambda w, g: nn.init.orthogonal_(w, gain=2.0, generator=g),
        shape,
    )
    torch.testing.assert_close(a, b)


def test_orthogonal_has_all_singular_values_equal_gain():
    w = orthogonal_(torch.empty(50, 80), gain=1.5)
    torch.testing.assert_close(
        torch.linalg.svdvals(w), torch.full((50,), 1.5), rtol=1e-5, atol=1e-5
    )


def test_apply_init_takes_the_gain_from_the_following_activation():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(400, 400),
        nn.BatchNorm1d(400),
        nn.Tanh(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 10),
    )
    apply_init(model, "he")
    stds = [model[i].weight.std().item() for i in (0, 3, 5)]
    assert stds[0] == pytest.approx((5 / 3) / 20, rel=0.03)  # tanh gain
    assert stds[1] == pytest.approx(math.sqrt(2) / 20, rel=0.03)  # relu gain
    assert stds[2] == pytest.approx(1 / 20, rel=0.03)  # logits: no activation
    assert all(torch.count_nonzero(model[i].bias) == 0 for i in (0, 3, 5))


def test_nonlinearity_overrides_all_but_the_last_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(400, 400), nn.Tanh(), nn.Linear(400, 400), nn.Tanh(), nn.Linear(400, 10)
    )
    apply_init(model, "he", nonlinearity="relu")
    assert model[0].weight.std().item() == pytest.approx(math.sqrt(2) / 20, rel=0.03)
    assert model[4].weight.std().item() == pytest.approx(1 / 20, rel=0.03)


def test_xavier_ignores_the_activation_as_the_lecture_does():
    torch.manual_seed(0)
    model = apply_init(nn.Sequential(nn.Linear(900, 900), nn.ReLU(), nn.Linear(900, 2)), "xavier")
    assert model[0].weight.std().item() == pytest.approx(1 / 30, rel=0.02)


def test_torch_scheme_restores_pytorch_defaults():
    model = apply_init(nn.Sequential(nn.Linear(100, 100)), "large")
    apply_init(model, "torch")
    bound = 1 / math.sqrt(100)  # kaiming_uniform(a=sqrt(5)) gives U[-1/sqrt(fan_in), ...]
    assert model[0].weight.abs().max().item() <= bound


def test_unknown_scheme_and_lsuv_without_data_are_clear_errors():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="unknown init scheme 'glorot'.*xavier"):
        apply_init(model, "glorot")
    with pytest.raises(ValueError, match="data"):
        apply_init(model, "lsuv")


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
def test_lsuv_gives_unit_output_variance_at_every_layer(activation):
    torch.manual_seed(0)
    x = torch.randn(512, 64) * 3 + 1
    model = mlp(64, [128] * 8, 10, activation=activation, init="small")
    report = lsuv_(model, x)
    outputs = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o.var().item()))
        for m in model
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(outputs) == 9 == len(report)
    for variance in outputs:
        assert abs(variance - 1) < LSUV_TOLERANCE
    assert all(r["iterations"] >= 1 for r in report.values())


def test_lsuv_leaves_batchnorm_statistics_untouched():
    torch.manual_seed(0)
    model = mlp(20, [30, 30], 3, batch_norm=True, init="lsuv", init_data=torch.randn(64, 20) + 5)
    assert torch.count_nonzero(model.bn1.running_mean) == 0
    assert model.bn1.num_batches_tracked.item() == 0
