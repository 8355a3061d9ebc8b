import torch

from babysit.lab.experiments.batchnorm import InputPercentiles, _drift
from babysit.nn import mlp
from babysit.train import fit


def test_tiny_run_tracks_percentiles_for_both_nets_and_climbs_the_ladder(tiny):
    result = tiny("batchnorm")
    assert len(result.claims) == 4
    for key in ("plain", "bn"):
        track = result.data["percentiles"][key]
        assert len(track["steps"]) == len(track["values"])
        low, mid, high = zip(*track["values"], strict=True)
        assert all(a <= b <= c for a, b, c in zip(low, mid, high, strict=True))
        assert set(result.data["steps"][key]) == {"xavier", "small", "large"}
    assert set(result.data["ladder"]["bn"]) == {"0.3", "3"}


def test_drift_is_the_largest_move_of_the_median_in_units_of_the_widest_spread():
    # two units; (steps, [p15, p50, p85], units)
    values = [
        torch.tensor([[-1.0, -2.0], [0.0, 0.0], [1.0, 2.0]]),
        torch.tensor([[0.0, -2.0], [1.0, 0.5], [2.0, 2.0]]),
        torch.tensor([[-1.5, -4.0], [-0.5, -1.0], [0.5, 4.0]]),
    ]
    # unit 0: median moved at most 1, widest spread 2; unit 1: moved 1, widest spread 8
    assert torch.allclose(_drift(values), torch.tensor([1.0 / 2.0, 1.0 / 8.0]))


def test_input_percentiles_match_quantiles_of_the_layer_and_leave_training_alone():
    x, y = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 3
    probe = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))

    def train(callbacks):
        torch.manual_seed(0)
        model = mlp(5, [7, 7], 3, "sigmoid", "xavier", batch_norm=True)
        fit(model, (x, y), epochs=1, lr=0.1, batch_size=16, device="cpu", callbacks=callbacks)
        return model

    tracker = InputPercentiles(probe, "bn2", every=2)
    model = train([tracker])
    assert tracker.steps == [0, 2, 4]  # 4 steps: 64 examples in batches of 16
    with torch.no_grad():
        model.train()
        inputs = model.bn2(model.fc2(model.sigmoid1(model.bn1(model.fc1(probe)))))
    expected = torch.quantile(inputs, torch.tensor([0.15, 0.5, 0.85]), dim=0)
    assert torch.allclose(tracker.values[-1], expected, atol=1e-5)
    plain = train([])  # the same run without the tracker: identical weights and BN statistics
    assert torch.equal(
        plain.bn2.running_mean, train([InputPercentiles(probe, "bn2", 2)]).bn2.running_mean
    )
    assert torch.equal(plain.fc2.weight, model.fc2.weight)
