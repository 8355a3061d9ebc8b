"""Benchmark: the cost of the Monitor, all probes on, on a small CNN.

    python bench/monitor_overhead.py              # 14 blocks of 6 steps per model, ~5 min here
    python bench/monitor_overhead.py --threads 1  # CPU time without thread contention
    python bench/monitor_overhead.py --quick      # a smoke run: a few tiny blocks
    python bench/monitor_overhead.py --no-compile # without the torch.compile pair

Four identical models and optimizers train in one process on the same synthetic
CIFAR-shaped batches: A plain, A' plain too (a control), B under a Monitor at its defaults,
C under a Monitor probing every step (every=1). Each stays as it is for the whole run, so
the `every` schedule is measured as users get it. Short blocks of steps alternate between
them after a warm-up block each, the order rotating every round, and the figures are
median(B block) / median(A block) and median(C block) / median(A block) (BENCHMARKS.md:
ratios from alternating blocks hold up on a shared machine; two runs one after the other do
not). A' / A is the noise floor of the run: a ratio within it of 1 is no measurable cost.
The Monitors run with all probes on: histograms, dead and saturated fractions, gradient
statistics, update ratios and the non-finite guard. Prints `overhead_ratio=<B/A>` (the
target is <= 1.05 on a 2-core CPU), the every=1 ratio, the control ratio, the same ratios
in process CPU time, the plain step time and the shapes. With torch.compile (on by default,
off in --quick), two more models alternate with them: D compiled, E compiled under a
Monitor at its defaults, and it prints `compile_ratio=<E/D>` (target <= 1.10; the Monitor's
probes run outside the compiled graph). Timings belong here, never in unit tests. Exits 0.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from babysit.nn import cnn  # noqa: E402
from babysit.train import Monitor  # noqa: E402

TARGET_RATIO = 1.05  # the default Monitor, all probes on, within 5% of a plain step
COMPILE_TARGET_RATIO = 1.10  # a compiled model under the Monitor vs the compiled model alone
CHANNELS = (32, 64, 64)  # BENCHMARKS.md's reference CNN
CLASSES = 10
LR, MOMENTUM = 0.01, 0.9
POOL = 8  # distinct synthetic batches, cycled


def _batches(batch: int, image: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, 3, image, image, generator=g),
            torch.randint(0, CLASSES, (batch,), generator=g),
        )
        for _ in range(POOL)
    ]


class Runner:
    """One model, its optimizer and (maybe) a Monitor; `block(n)` times n training steps."""

    def __init__(
        self, model: nn.Module, data, device: torch.device, monitor_kwargs=None, compile=False
    ):
        self.model = model.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.forward = torch.compile(self.model) if compile else self.model
        self.data = [(x.to(device), y.to(device)) for x, y in data]
        self.device = device
        self.monitor = (
            None
            if monitor_kwargs is None
            else Monitor(self.forward, self.optimizer, **monitor_kwargs)
        )
        if self.monitor is not None:
            self.monitor.attach()
        self.cursor = 0
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def block(self, steps: int, record: bool = True) -> None:
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            x, y = self.data[self.cursor % len(self.data)]
            self.cursor += 1
            loss = nn.functional.cross_entropy(self.forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.monitor is not None:
                self.monitor.step(loss)
        self._sync()
        if record:
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - cpu_start)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.detach()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny blocks")
    parser.add_argument("--blocks", type=int, default=14, help="timed blocks per model")
    parser.add_argument("--steps", type=int, default=6, help="steps per block")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time a torch.compile'd pair (default: on, off with --quick)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.blocks, args.steps, args.batch = 2, 2, 16
    image = 32
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    base = cnn(3, image, list(CHANNELS), CLASSES, activation="relu", init="he")
    data = _batches(args.batch, image, args.seed)
    defaults = Monitor(base)
    runners = {
        "plain": Runner(copy.deepcopy(base), data, device),
        "control": Runner(copy.deepcopy(base), data, device),
        "default": Runner(copy.deepcopy(base), data, device, {}),
        "every1": Runner(copy.deepcopy(base), data, device, {"every": 1}),
    }
    compiled = args.compile if args.compile is not None else not args.quick
    if compiled:
        runners["compiled"] = Runner(copy.deepcopy(base), data, device, compile=True)
        runners["compiled_monitor"] = Runner(copy.deepcopy(base), data, device, {}, compile=True)
    print(
        f"model: cnn {'/'.join(map(str, CHANNELS))} channels, ReLU, "
        f"{sum(p.numel() for p in base.parameters()):,} parameters; "
        f"batch {args.batch} x 3 x {image} x {image}; SGD momentum {MOMENTUM}; "
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"monitor: {len(defaults.layers)} layers watched, defaults every={defaults.every}, "
        f"sample={defaults.sample}, histograms on; blocks: {args.blocks} x {args.steps} steps "
        "per model after one warm-up block, alternating in a rotating order"
    )
    order = list(runners.values())
    for runner in order:
        runner.block(args.steps, record=False)  # for a compiled model: compiles it
        runner.block(args.steps, record=False)
    for round_ in range(args.blocks):
        shift = round_ % len(order)
        for runner in order[shift:] + order[:shift]:
            runner.block(args.steps)
    for runner in order:
        runner.close()
    wall = {name: statistics.median(r.times) for name, r in runners.items()}
    cpu = {name: statistics.median(r.cpu_times) for name, r in runners.items()}
    print(f"plain_step_ms={1e3 * wall['plain'] / args.steps:.1f}")
    print(
        f"overhead_ratio={wall['default'] / wall['plain']:.3f}  "
        f"(Monitor defaults, target <= {TARGET_RATIO})"
    )
    print(
        f"overhead_ratio_every1={wall['every1'] / wall['plain']:.3f}  "
        "(every=1: all probes on every step)"
    )
    print(f"control_ratio={wall['control'] / wall['plain']:.3f}  (plain vs plain: the noise)")
    if compiled:
        print(
            f"compile_ratio={wall['compiled_monitor'] / wall['compiled']:.3f}  "
            f"(torch.compile'd model under the Monitor vs compiled alone, target <= "
            f"{COMPILE_TARGET_RATIO}; compiled step {1e3 * wall['compiled'] / args.steps:.1f} ms)"
        )
    # CPU time of the process: less sensitive than wall time to other processes on a shared
    # machine, but it counts the spin-waits of idle torch threads, so it is fairest with
    # --threads 1.
    print(
        f"cpu_time_ratio={cpu['default'] / cpu['plain']:.3f}  "
        f"cpu_time_ratio_every1={cpu['every1'] / cpu['plain']:.3f}  "
        f"cpu_time_control={cpu['control'] / cpu['plain']:.3f}  "
        f"(plain step {1e3 * cpu['plain'] / args.steps:.1f} ms of CPU)"
    )
    spread = {n: (min(r.times) / wall[n], max(r.times) / wall[n]) for n, r in runners.items()}
    print(
        "block spread (min/median, max/median): "
        + ", ".join(f"{n} {lo:.2f}-{hi:.2f}" for n, (lo, hi) in spread.items())
    )
    history = runners["default"].monitor.history
    print(
        f"monitored steps: {len(history)}, probe records: "
        f"{sum('layers' in r for r in history)} (default Monitor)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
