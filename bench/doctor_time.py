"""Benchmark: wall and CPU time of whole `babysit doctor` commands, start-up included.

    python bench/doctor_time.py            # 3 rounds of each command (~2 min on 2 cores)
    python bench/doctor_time.py --runs 5

Commands, run in turn (A, B, C, D, A, B, ...) so that a drift in the machine's speed hits
all of them alike (BENCHMARKS.md):
- start-up: `python -c "import babysit.doctor, babysit.cli"` (the floor: Python, torch);
- default: `babysit doctor` (the 2x100 ReLU MLP on the bundled digits, quick mode);
- cnn: `babysit doctor --quick --model bench/doctor_time.py:digits_cnn` (a 2-conv CNN);
- default --threads 2: the same as default with torch's 2 intra-op threads, to show why the
  checkup runs single-threaded.
Prints min / median / max of wall and CPU (user + system) seconds per command, and the
median per-round ratio of --threads 2 to the default. The target is the brief's: the
default run within 30 s of wall time on a 2-core CPU. Timings belong here, never in tests.
Exits 0.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
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
