import math

import pytest
import torch
from torch import nn

from babysit.nn import ACTIVATIONS, Maxout, activation, activation_info
from babysit.nn.activations import second_moment_gain


@pytest.mark.parametrize(
    "name", ["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout"]
)
def test_lecture_activations_build_by_name(name):
    module = activation(name)
    x = torch.randn(8, 6)
    assert module(x).shape[0] == 8
    assert activation_info(module).name == name


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*relu.*tanh"):
        activation("swishy")


def test_defaults_match_the_lecture():
    assert activation("leaky_relu").negative_slope == 0.01
    assert activation("elu").alpha == 1.0
    assert activation("maxout").k == 2
    prelu = activation("prelu")
    assert isinstance(prelu, nn.PReLU) and prelu.weight.requires_grad


def test_prelu_per_channel_has_one_slope_per_channel():
    assert activation("prelu", num_parameters=16).weight.shape == (16,)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_gain_agrees_with_torch_calculate_gain(name):
    assert activation_info(name).gain == pytest.approx(nn.init.calculate_gain(name), rel=1e-12)


def test_second_moment_rule_reproduces_torch_rectifier_gains():
    # The rule we use for ELU/Maxout must give torch's values where torch defines one.
    assert second_moment_gain(torch.relu) == pytest.approx(math.sqrt(2), rel=1e-6)
    slope = 0.2
    leaky = second_moment_gain(lambda z: nn.functional.leaky_relu(z, slope))
    assert leaky == pytest.approx(nn.init.calculate_gain("leaky_relu", slope), rel=1e-6)


def test_elu_gain_matches_closed_form():
    # E[elu(z)^2] = E[z^2; z>0] + E[(e^z - 1)^2; z<0]
    #            = 1/2 + e^2 Phi(-2) - 2 e^(1/2) Phi(-1) + Phi(0),
    # using E[e^(tz); z<0] = e^(t^2/2) Phi(-t).
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731
    negative_part = math.exp(2) * phi(-2) - 2 * math.exp(0.5) * phi(-1) + 0.5
    expected = 1 / math.sqrt(0.5 + negative_part)
    assert activation_info("elu").gain == pytest.approx(expected, rel=1e-6)


def test_maxout_gain_keeps_the_second_moment_empirically():
    torch.manual_seed(0)
    for k in (2, 3, 5):
        z = torch.randn(400_000, k)
        second_moment = z.amax(dim=1).pow(2).mean().item()
        assert activation_info("maxout", k=k).gain == pytest.approx(
            1 / math.sqrt(second_moment), rel=5e-3
        )


def test_facts_for_the_checkup():
    sigmoid, tanh, relu, elu = (activation_info(n) for n in ("sigmoid", "tanh", "relu", "elu"))
    assert sigmoid.output_range == (0.0, 1.0) and not sigmoid.zero_centered
    assert sigmoid.saturates == "both" and tanh.saturates == "both"
    assert tanh.zero_centered and tanh.output_range == (-1.0, 1.0)
    assert relu.can_die and relu.saturates == "none" and relu.output_range[0] == 0.0
    assert elu.saturates == "negative" and not elu.can_die
    assert not activation_info("leaky_relu").can_die


def test_saturation_mask_marks_tails_of_tanh_only():
    info = activation_info("tanh")
    y = torch.tensor([0.0, 0.5, 0.9, 0.98, -0.99, 1.0])
    assert info.saturated(y).tolist() == [False, False, False, True, True, True]


def test_recognises_modules_it_did_not_build():
    assert activation_info(nn.LeakyReLU(0.2)).gain == pytest.approx(math.sqrt(2 / 1.04))
    assert activation_info(nn.ReLU(inplace=True)).name == "relu"
    assert activation_info(nn.Linear(2, 2)) is None
    assert activation_info(nn.Softmax(dim=1)).name == "softmax"


def test_maxout_takes_the_max_of_k_consecutive_channels():
    x = torch.tensor([[1.0, 5.0, -2.0, -3.0, 0.5, 0.25]])
    assert Maxout(2)(x).tolist() == [[5.0, -2.0, 0.5]]
    assert Maxout(3)(x).tolist() == [[5.0, 0.5]]
    conv_out = torch.randn(2, 8, 4, 4)
    assert torch.equal(Maxout(4)(conv_out), conv_out.reshape(2, 2, 4, 4, 4).amax(dim=2))


def test_maxout_rejects_channels_not_divisible_by_k():
    with pytest.raises(ValueError, match="not a multiple of k"):
        Maxout(3)(torch.randn(2, 4))


def test_maxout_gradient_matches_finite_differences():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(5, 6), Maxout(3)).double()
    x = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), Maxout(2)).double()
    xc = torch.randn(2, 2, 5, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (xc,))


def test_registry_has_every_lecture_activation():
    assert {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout"} <= set(ACTIVATIONS)
