import pytest
import torch
from torch import nn

from babysit.nn import activation_info, mlp
from babysit.probes import Hooks, activation_stats, dead_fraction, select_layers, update_ratios


@pytest.fixture(scope="module")
def unit_gaussian():
    return torch.randn(1000, 500, generator=torch.Generator().manual_seed(0))


def _tanh_stats(init, x):
    torch.manual_seed(1)
    model = mlp(500, [500] * 10, 10, activation="tanh", init=init)
    return [s for s in activation_stats(model, x) if s.activation == "tanh"]


def test_small_init_activations_collapse_layer_after_layer(unit_gaussian):
    stds = [s.std for s in _tanh_stats("small", unit_gaussian)]
    assert all(b < 0.5 * a for a, b in zip(stds, stds[1:], strict=False))
    assert stds[-1] < 1e-6  # the lecture: all activations become zero


def test_xavier_keeps_tanh_std_across_depth(unit_gaussian):
    stds = [s.std for s in _tanh_stats("xavier", unit_gaussian)]
    # The lecture's numbers for this net: 0.63, 0.49, 0.41, ... 0.23 - a slow decline, no collapse.
    assert min(stds) > 0.2 and stds[-1] / stds[0] > 0.3
    assert all(b > 0.75 * a for a, b in zip(stds, stds[1:], strict=False))


def test_large_init_saturates_most_tanh_units(unit_gaussian):
    stats = _tanh_stats("large", unit_gaussian)
    assert all(s.saturated_fraction > 0.8 for s in stats)
    counts = stats[5].histogram
    assert counts[0] + counts[-1] > 0.8 * sum(counts)  # piled up at -1 and +1


def test_gradients_vanish_with_small_init(unit_gaussian):
    torch.manual_seed(1)
    model = mlp(500, [500] * 10, 10, activation="tanh", init="small")
    y = torch.randint(0, 10, (1000,))
    stats = [s for s in activation_stats(model, unit_gaussian, y) if s.kind == "Linear"]
    assert stats[0].grad_std < 1e-6 * stats[-1].grad_std
    grad_stds = [s.grad_std for s in stats]
    assert all(a < b for a, b in zip(grad_stds, grad_stds[1:], strict=False))


def test_dead_fraction_of_relu_with_large_negative_bias_is_one():
    torch.manual_seed(0)
    layer = nn.Linear(50, 200)
    nn.init.constant_(layer.bias, -100.0)
    out = torch.relu(layer(torch.randn(256, 50)))
    assert dead_fraction(out).item() == 1.0


def test_dead_fraction_of_healthy_he_layer_is_small():
    torch.manual_seed(0)
    layer = nn.Linear(50, 200)
    nn.init.kaiming_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    out = torch.relu(layer(torch.randn(256, 50)))
    assert dead_fraction(out).item() < 0.02


def test_dead_fraction_counts_conv_channels_as_units():
    out = torch.ones(4, 3, 5, 5)
    out[:, 1] = 0.0
    out[0, 2, 0, 0] = -1.0  # one negative position does not kill a channel
    assert dead_fraction(out).item() == pytest.approx(1 / 3)


def test_activation_stats_are_in_forward_order_and_report_dead_units():
    torch.manual_seed(0)
    model = mlp(20, [30, 30], 4)
    nn.init.constant_(model.fc2.bias, -50.0)
    stats = activation_stats(model, torch.randn(64, 20))
    assert [s.name for s in stats] == ["fc1", "relu1", "fc2", "relu2", "logits"]
    assert stats[3].dead_fraction == 1.0 and stats[1].dead_fraction < 0.2
    assert stats[0].dead_fraction is None  # not an activation


def test_activation_stats_leave_the_model_as_found():
    torch.manual_seed(0)
    model = mlp(20, [30], 4, batch_norm=True, dropout=0.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    activation_stats(model, torch.randn(64, 20) + 3, torch.randint(0, 4, (64,)))
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_nan_injected_into_a_layer_is_reported_from_that_layer_on():
    torch.manual_seed(0)
    model = mlp(10, [20, 20, 20], 3)
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    stats = {s.name: s for s in activation_stats(model, torch.randn(8, 10))}
    assert not stats["fc1"].nonfinite and not stats["relu1"].nonfinite
    assert stats["fc2"].nonfinite and stats["logits"].nonfinite


def test_update_ratio_of_plain_sgd_equals_lr_grad_over_weight():
    torch.manual_seed(0)
    model = mlp(20, [30], 5)
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = nn.functional.cross_entropy(model(torch.randn(16, 20)), torch.randint(0, 5, (16,)))
    loss.backward()
    params = [p for p in model.parameters() if p.dim() >= 2]  # biases start at 0
    before = [p.detach().clone() for p in params]
    expected = torch.stack([lr * p.grad.norm() / p.norm() for p in params])
    opt.step()
    ratios = update_ratios(before, [p.detach() for p in params])
    torch.testing.assert_close(ratios, expected, rtol=1e-5, atol=0)


def test_update_ratio_works_for_adam_from_the_actual_step():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(100))
    opt = torch.optim.Adam([w], lr=1e-3)
    w.grad = torch.randn(100)
    before = [w.detach().clone()]
    opt.step()  # Adam's first step moves each weight by ~lr, whatever the gradient's size
    ratio = update_ratios(before, [w.detach()]).item()
    assert ratio == pytest.approx(1e-3 * 10 / before[0].norm().item(), rel=1e-2)


def test_hooks_are_gone_after_exit_even_when_the_body_raises():
    model = mlp(10, [20], 3)
    seen = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        Hooks(select_layers(model), forward=lambda *a: seen.append(a[0])),
    ):
        model(torch.randn(2, 10))
        raise RuntimeError("boom")
    assert seen == ["fc1", "relu1", "logits"]
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks


def test_backward_hooks_see_output_gradients_and_do_not_leak_to_later_passes():
    model = mlp(10, [20], 3)
    grads = {}
    x = torch.randn(4, 10)
    with Hooks(select_layers(model, ["relu1"]), backward=lambda n, m, g: grads.setdefault(n, g)):
        model(x).sum().backward()
    assert grads["relu1"].shape == (4, 20)
    grads.clear()
    model(x).sum().backward()
    assert grads == {}


def test_select_layers_by_name_type_and_unknown_name():
    model = mlp(10, [20, 20], 3, activation="tanh")
    assert [n for n, _ in select_layers(model, [nn.Tanh])] == ["tanh1", "tanh2"]
    assert [n for n, _ in select_layers(model, ["fc2"])] == ["fc2"]
    with pytest.raises(ValueError, match="no module named fc9"):
        select_layers(model, ["fc9"])


def test_saturation_facts_come_from_the_activation():
    assert activation_info("sigmoid").saturated(torch.tensor([0.001, 0.5, 0.999])).tolist() == [
        True,
        False,
        True,
    ]
