"""The Monitor's quantities: update ratios scheduled by optimizer steps."""

import torch
from torch import nn

from babysit.train import Monitor


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)
    ]


def test_update_ratios_survive_gradient_accumulation_with_a_step_per_micro_batch():
    """mon.step after every micro-batch, optimizer.step every 2nd: the probe steps (1, 11, 21
    in mon.step calls) never coincided with an optimizer step, so the ratios vanished."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=10) as mon:
        for i, (x, y) in enumerate(_batches(40), start=1):
            (nn.functional.cross_entropy(model(x), y) / 2).backward()
            if i % 2 == 0:
                opt.step()
                opt.zero_grad()
            mon.step(nn.functional.cross_entropy(model(x), y).detach())
    with_ratios = [r["step"] for r in mon.history if "update_ratios" in r]
    # optimizer steps 1 and 11 happen during mon.step calls 2 and 22
    assert with_ratios == [2, 22]
    assert mon.optimizer_steps == 20


def test_update_ratio_of_the_measured_optimizer_step_is_exact_under_accumulation():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {}
    with Monitor(model, opt, every=1) as mon:
        for i, (x, y) in enumerate(_batches(6), start=1):
            nn.functional.cross_entropy(model(x), y).backward()
            if i % 3 == 0:
                before = {n: p.detach().clone() for n, p in model.named_parameters()}
                opt.step()
                expected[i] = {
                    n: float((p.detach() - before[n]).norm() / before[n].norm())
                    for n, p in model.named_parameters()
                }
                opt.zero_grad()
            mon.step(0.0)
    got = {r["step"]: r["update_ratios"] for r in mon.history if "update_ratios" in r}
    assert set(got) == {3, 6}
    for step, ratios in expected.items():
        for name, value in ratios.items():
            assert abs(got[step][name] - value) <= 1e-6 * value


def test_skipped_optimizer_steps_do_not_count():
    """AMP's GradScaler skips optimizer.step() on overflow: only steps that ran are counted,
    and the schedule goes by them."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(model, opt, every=2) as mon:
        for i, (x, y) in enumerate(_batches(8), start=1):
            nn.functional.cross_entropy(model(x), y).backward()
            if i not in (1, 2):  # the first two are skipped
                opt.step()
            opt.zero_grad()
            mon.step(0.0)
    assert mon.optimizer_steps == 6
    assert [r["step"] for r in mon.history if "update_ratios" in r] == [3, 5, 7]
