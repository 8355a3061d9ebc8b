"""Benchmark: wall and CPU time of whole `babysit doctor` commands, start-up included.

    python bench/doctor_time.py            # 3 rounds of each command (~2 min on 2 cores)
    python bench/doctor_time.py --runs 5
    python bench/doctor_time.py --models --only gpt2   # one of issue 12's two figures

Commands, run in turn (A, B, C, D, A, B, ...) so that a drift in the machine's speed hits
all of them alike (BENCHMARKS.md):
- start-up: `python -c "import babysit.doctor, babysit.cli"` (the floor: Python, torch);
- default: `babysit doctor` (the 2x100 ReLU MLP on the bundled digits, quick mode);
- cnn: `babysit doctor --quick --model bench/doctor_time.py:digits_cnn` (a 2-conv CNN);
- default --threads 2: the same as default with torch's 2 intra-op threads, to show why the
  checkup runs single-threaded.
Prints min / median / max of wall and CPU (user + system) seconds per command, and the
median per-round ratio of --threads 2 to the default. The target is the brief's: the
default run within 30 s of wall time on a 2-core CPU.

Then issue 12's two figures (`--models` runs only these, `--no-models` skips them): the
default checkup (`bs.checkup(model, (x, y))`, quick mode, lr found by the range test) of
- ResNet-18, CIFAR variant (tests/zoo/zoo.py), on 2,000 3x32x32 images of 10 classes;
- GPT-2 from a config (2 layers, 64 wide, 2 heads, vocab 100, T=32) on 2,000 sequences;
each as a ratio to 2 epochs of plain training of the same model on the same data (SGD with
momentum 0.9, lr 0.01, batches of 64, one torch thread as the checkup uses), measured in the
same child process right before. Target: ratio <= 1. A checkup that runs past --timeout is
reported as "> timeout". Timings belong here, never in tests. Exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 30.0  # the brief: `babysit doctor` with no arguments within 30 s on 2 cores


def digits_cnn(input_shape, classes):
    """The CNN the benchmark checks: 2 conv layers (16, 32 channels), He init."""
    from babysit.nn import cnn

    channels, height, _ = input_shape
    return cnn(channels, height, [16, 32], classes)


MODEL_TARGET = 1.0  # issue 12: the checkup costs at most 2 epochs of plain training
MODEL_EXAMPLES = 2000
MODEL_EPOCHS = 2
MODEL_BATCH = 64


def _model_case(name: str):
    """(model, (x, y), note) for one of the issue's two figures, seeded."""
    import torch

    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "zoo")]  # zoo imports tests.zoo.resnet
    import zoo

    torch.manual_seed(0)
    if name == "resnet18":
        x, y = zoo.images(MODEL_EXAMPLES, (3, 32, 32), 10, seed=0)
        return zoo.resnet18(10), (x, y), "ResNet-18 (CIFAR), 2,000 x 3x32x32, 10 classes"
    ids, targets = zoo.token_sequences(MODEL_EXAMPLES, zoo.SEQ_LEN, zoo.VOCAB, seed=0)
    model = zoo.gpt2()
    return model, (ids, targets), "GPT-2 (2 layers, 64 wide, vocab 100), 2,000 x T=32"


def _plain_epochs(model, data) -> float:
    """Seconds for MODEL_EPOCHS epochs of a plain loop on a copy of `model`."""
    import copy

    import torch
    from torch.nn import functional as F

    from babysit.data.batches import model_output

    net = copy.deepcopy(model)
    x, y = data
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(MODEL_EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), MODEL_BATCH):
            rows = order[i : i + MODEL_BATCH]
            logits = model_output(net, x[rows])
            if logits.dim() == 3:  # (B, T, V) scores against (B, T) tokens
                logits = logits.transpose(1, 2)
            optimizer.zero_grad()
            F.cross_entropy(logits, y[rows]).backward()
            optimizer.step()
    return time.perf_counter() - start


def _model_child(name: str) -> None:
    """In a child process: print the plain time, then the checkup's, as JSON lines."""
    import warnings

    import torch

    warnings.simplefilter("ignore")
    from transformers.utils import logging

    logging.set_verbosity_error()
    import babysit as bs
    from babysit.errors import UsageError

    torch.set_num_threads(1)
    model, data, note = _model_case(name)
    plain = _plain_epochs(model, data)
    print(json.dumps({"plain_s": plain, "note": note}), flush=True)
    wrapped = ""
    start = time.perf_counter()
    try:
        report = bs.checkup(model, data)
    except UsageError as e:  # today: a ModelOutput is "no tensor"; time it wrapped
        sys.path.insert(0, str(ROOT / "tests" / "zoo"))
        import zoo

        wrapped = f"as returned: UsageError ({str(e)[:60]}...); timed with zoo.Logits"
        start = time.perf_counter()
        report = bs.checkup(zoo.Logits(model, classes_first=True), data)
    checkup_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "checkup_s": checkup_s,
                "wrapped": wrapped,
                "codes": sorted(report.codes),
                "steps_s": {k: round(v, 1) for k, v in report.meta["timings_s"].items()},
                "plan": report.measurements.get("plan", {}),
            }
        ),
        flush=True,
    )


def _model_figure(name: str, timeout: float) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout, env=env)
        out, timed_out = done.stdout.decode(), False
        if done.returncode:
            sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
    except subprocess.TimeoutExpired as e:
        out, timed_out = (e.stdout or b"").decode(), True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    facts = {k: v for line in lines for k, v in line.items()}
    plain = facts.get("plain_s")
    print(f"{name}: {facts.get('note', '')}")
    if plain is None:
        print(f"  plain training did not finish within {timeout:.0f} s")
        return
    print(f"  {MODEL_EPOCHS} epochs of plain training (batch {MODEL_BATCH}): {plain:.1f} s")
    if timed_out or "checkup_s" not in facts:
        print(
            f"  checkup: > {timeout - plain:.0f} s (stopped at --timeout), ratio > "
            f"{(timeout - plain) / plain:.1f}x against the {MODEL_TARGET:.0f}x target"
        )
        return
    ratio = facts["checkup_s"] / plain
    verdict = "within" if ratio <= MODEL_TARGET else "OVER"
    print(
        f"  checkup: {facts['checkup_s']:.1f} s, ratio {ratio:.2f}x against the "
        f"{MODEL_TARGET:.0f}x target ({verdict})"
    )
    if facts.get("wrapped"):
        print(f"  {facts['wrapped']}")
    print(f"  per step: {facts['steps_s']}; codes: {', '.join(facts['codes']) or 'none'}")
    plan = facts.get("plan") or {}
    if plan:
        used = sum((plan.get("used_steps") or {}).values())
        print(
            f"  plan: {plan.get('rule')}; {used:.0f} training steps' worth of work counted "
            f"against {plan.get('allowance_steps')} allowed; steps {plan.get('planned_steps')}"
        )
        counted = {k: round(v, 1) for k, v in (plan.get("used_steps") or {}).items() if v}
        print(f"  work counted per check, in training steps: {counted}")


def _babysit() -> list[str]:
    exe = Path(sys.executable).with_name("babysit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "babysit"]


def _commands() -> dict[str, list[str]]:
    doctor = [*_babysit(), "doctor"]
    return {
        "start-up": [sys.executable, "-c", "import babysit.doctor, babysit.cli"],
        "default": doctor,
        "cnn": [*doctor, "--quick", "--model", f"{Path(__file__).resolve()}:digits_cnn"],
        "default --threads 2": [*doctor, "--threads", "2"],
    }


def _run(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, env={**os.environ, "COLUMNS": "100"}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
    return wall, cpu, done.returncode


def _spread(values: list[float]) -> str:
    return f"{min(values):6.1f} {statistics.median(values):6.1f} {max(values):6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of each command")
    parser.add_argument("--models", action="store_true", help="only the ResNet-18/GPT-2 figures")
    parser.add_argument("--no-models", action="store_true", help="skip those figures")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per model figure")
    parser.add_argument("--only", choices=("gpt2", "resnet18"), help="one of the two model figures")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _model_child(args.child)
        return
    if not args.models:
        _commands_figures(args)
    if not args.no_models:
        print(f"issue 12: default checkup against {MODEL_EPOCHS} epochs of plain training")
        for name in (args.only,) if args.only else ("gpt2", "resnet18"):
            _model_figure(name, args.timeout)


def _commands_figures(args) -> None:
    commands = _commands()
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
    _run(commands["start-up"])  # warm-up: the file cache, not counted
    for round_ in range(args.runs):
        for name, command in commands.items():
            times[name].append(_run(command))
        print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr, flush=True)

    print(
        f"babysit doctor, whole commands, {args.runs} rounds, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'command':24s} {'wall s (min med max)':>22s} {'cpu s (min med max)':>22s}  exit")
    for name, runs in times.items():
        walls, cpus, codes = zip(*runs, strict=True)
        print(
            f"{name:24s} {_spread(list(walls)):>22s} {_spread(list(cpus)):>22s}  "
            f"{sorted(set(codes))}"
        )
    ratios = [
        two[0] / one[0]
        for one, two in zip(times["default"], times["default --threads 2"], strict=True)
    ]
    median = statistics.median(w for w, _, _ in times["default"])
    print(
        f"--threads 2 / default (1 thread), wall, median of per-round ratios: "
        f"{statistics.median(ratios):.2f}x"
    )
    print(
        f"default run: median {median:.1f} s wall against the {TARGET_S:.0f} s target "
        f"({'within' if median <= TARGET_S else 'OVER'})"
    )


if __name__ == "__main__":
    main()
