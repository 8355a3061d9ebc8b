import math

import torch

from babysit.lab.experiments import init


def test_tiny_run_reports_every_activation_and_init(tiny):
    result = tiny("init")
    assert result.name == "init" and len(result.claims) == 5
    curves = result.data["curves"]
    assert set(curves) == {f"{a}/{i}" for a in init.ACTIVATIONS for i in init.INITS}
    assert all(len(c["std"]) == result.data["layers"] == 10 for c in curves.values())
    assert len(result.data["histograms"]["tanh/small"]["counts"]) == 10


def test_small_init_collapses_and_large_init_saturates_even_at_tiny_scale(tiny, claim):
    result = tiny("init")
    assert claim(result, "Small init").passed  # std(layer 10) < 1e-3 std(layer 1)
    assert claim(result, "Large init").passed  # > 80% of tanh units saturated at every layer
    assert claim(result, "He init keeps ReLU").passed


def test_large_init_saturation_matches_the_gaussian_tail(tiny):
    # Layer 1: z = W x with W ~ N(0, 1), x ~ N(0, I_width), so z ~ N(0, |x|^2) ~ N(0, width);
    # a tanh unit counts as saturated where 1 - tanh(z)^2 < 0.05, |z| > atanh(sqrt(0.95)).
    width = init.SETTINGS["tiny"]["width"]
    edge = math.atanh(math.sqrt(0.95)) / math.sqrt(width)
    expected = 2 * (1 - torch.special.ndtr(torch.tensor(edge)).item())
    measured = tiny("init").data["curves"]["tanh/large"]["saturated"][0]
    assert abs(measured - expected) < 0.02


def test_xavier_halves_relu_variance_per_layer_as_he_et_al_predict(tiny):
    std = tiny("init").data["curves"]["relu/xavier"]["std"]
    per_layer = (std[-1] / std[0]) ** (1 / 9)
    assert abs(per_layer - 2**-0.5) < 0.05  # He et al. 2015, eq. 10: Var halves under ReLU
