"""Benchmark: how many training epochs each search method spends to find a good configuration.

    python bench/search_efficiency.py            # 2 tasks x 9 seeds, 150 epochs per method
    python bench/search_efficiency.py --quick    # 3 seeds, 50 epochs: a smoke run
    python bench/search_efficiency.py --first-seed 12 --seeds 6  # the held-out seeds
    python bench/search_efficiency.py --jobs 2 --methods tpe+hb,babysit,no-promo

Two tasks on the bundled digits data (standardized), SGD with momentum 0.9, batch 64:
  1. a 64-100-10 ReLU MLP (`babysit.nn.mlp`, He init), lr in [1e-6, 10] and weight decay in
     [1e-6, 1], both log-uniform (the issue's task);
  2. a net of 3 hidden BatchNorm layers, lr in [1e-4, 10], weight decay in [1e-6, 0.1] (log),
     dropout in [0, 0.6] and width in [16, 256] (log, integer): a task of another kind.
Every method gets the same budget of training epochs per seed:
  (a) grid:     a k^d grid (Optuna's GridSampler, in its seeded order), 4-epoch trials;
  (b) random:   Optuna's RandomSampler, 4-epoch trials, no pruning;
  (c) tpe+hb:   Optuna's TPESampler with a HyperbandPruner (1 to 8 epochs, eta 3) on the
                validation accuracy of each epoch;
  (d) babysit:  babysit.search with its default stages (PLAN: 1, 3, 9 and 27 epochs, each
                narrowed on the one before, with the 3x loss abort on every step, and each
                later stage first continuing the best trials of the one before from their
                checkpoints: successive halving);
  (e) no-promo: the same stages without promotion (every trial from scratch).
A trial's cost is the epochs it trained itself (a pruned trial counts the steps it ran; a
continued trial's earlier epochs were counted when its parent trained them, earlier in the
same run). For each seed, the target is the best validation accuracy any method found, less
1 point (absolute); a method's "epochs to target" is its cumulative cost at the end of the
first trial that reached it. Reported per method, as BENCHMARKS.md asks: the median best
accuracy, in how many seeds it reached the target, the median epochs where it did ("never"
otherwise), and the ratios to (c). All in one run (`--jobs N`: seeds in N processes); epochs,
not seconds, are compared, so the figures do not depend on the machine's load. Exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402
import torch  # noqa: E402

from babysit.search import DEFAULT_STAGES, Stage, search  # noqa: E402
from babysit.search.objective import ModelObjective  # noqa: E402
from babysit.search.study import STEPS_ATTR  # noqa: E402
from babysit.train import fit  # noqa: E402
from babysit.train.callbacks import Callback  # noqa: E402

LR = (1e-6, 10.0)  # the CS231n notes' coarse range, 10 ** uniform(-6, 1)
WEIGHT_DECAY = (1e-6, 1.0)


@dataclass(frozen=True)
class Task:
    """A benchmark task: the model's fixed settings and the searched ranges (low, high, log)."""

    name: str
    fixed: dict
    space: dict

    def describe(self) -> str:
        ranges = ", ".join(
            f"{n} {lo:g}..{hi:g}{' log' if log else ''}" for n, (lo, hi, log) in self.space.items()
        )
        return f"{self.name}; searching {ranges}"


# (1) the task: digits, 64-100-10 ReLU MLP, lr and weight decay.
MLP_TASK = Task(
    "digits, 64-100-10 MLP, SGD momentum, batch 64",
    {"width": 100, "depth": 1, "optimizer": "momentum", "batch_size": 64},
    {"lr": (*LR, True), "weight_decay": (*WEIGHT_DECAY, True)},
)
# (2) a task of another kind: a 3-hidden-layer BatchNorm net, 4 hyperparameters.
BN_TASK = Task(
    "digits, 3 hidden BatchNorm layers, SGD momentum, batch 64",
    {"depth": 3, "batch_norm": True, "optimizer": "momentum", "batch_size": 64},
    {
        "lr": (1e-4, 10.0, True),
        "weight_decay": (1e-6, 1e-1, True),
        "dropout": (0.0, 0.6, False),
        "width": (16, 256, True),
    },
)
TASKS = (MLP_TASK, BN_TASK)
TRIAL_EPOCHS = 4  # grid and random trial length
HYPERBAND_MAX_EPOCHS = 8
TARGET_MARGIN = 0.01  # "within 1% of the best accuracy any method found": 1 point, absolute
TPE_RATIO = 0.7  # issue 14: babysit reaches the target in <= 0.7x TPE+Hyperband's epochs
METHODS = ("grid", "random", "tpe+hb", "babysit", "no-promo")
# babysit's plan for 150 epochs: trials, epochs, and how many of a stage's trials continue
# the best of the stage before from their checkpoints: the default stages (141 epochs).
PLAN = tuple((s.trials, s.epochs, s.promote) for s in DEFAULT_STAGES)


@dataclass
class Run:
    """One method on one seed: each trial's (cost in epochs, validation accuracy or None)."""

    trials: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def spent(self) -> float:
        return sum(cost for cost, _ in self.trials)

    @property
    def best(self) -> float:
        return max((acc for _, acc in self.trials if acc is not None), default=0.0)

    def epochs_to(self, target: float) -> float | None:
        total = 0.0
        for cost, acc in self.trials:
            total += cost
            if acc is not None and acc >= target:
                return total
        return None


def parse_plan(text: str) -> tuple[tuple[int, int, int], ...]:
    """Parse "18x1,6x3:3,6x9:3,3x27:2": TRIALSxEPOCHS[:PROMOTED] per stage, for 150 epochs."""
    plan = []
    for part in text.split(","):
        head, _, promote = part.strip().partition(":")
        trials, _, epochs = head.partition("x")
        plan.append((int(trials), int(epochs), int(promote or 0)))
    return tuple(plan)


def babysit_stages(budget: int, promote: bool = True) -> list[Stage]:
    """PLAN (written for 150 epochs) with its trial counts scaled to `budget`; without
    `promote`, the same stages with every trial afresh."""
    scale, stages = budget / 150, []
    for index, (trials, epochs, promoted) in enumerate(PLAN):
        count = max(3 if index == 0 else 1, round(trials * scale))
        kept = min(count, max(1, round(promoted * scale))) if promoted and promote else 0
        stages.append(Stage(count, epochs=epochs, promote=kept))
    return stages


class _EpochReport(Callback):
    """Report each epoch's validation accuracy to an Optuna trial (for Hyperband)."""

    def __init__(self, trial: optuna.Trial, run: list[int]):
        self.trial, self.run = trial, run

    def on_epoch_end(self, state, metrics) -> None:
        self.run[0] = int(metrics["epoch"])
        self.trial.report(metrics["val_accuracy"], int(metrics["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def _suggest(trial: optuna.Trial, name: str, spec: tuple) -> float | int:
    low, high, log = spec
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, low, high, log=log)


def optuna_method(
    name: str,
    task: Task,
    objective: ModelObjective,
    sampler,
    pruner,
    epochs: int,
    budget: int,
    seed: int,
) -> Run:
    """Plain Optuna (`study.optimize`): each trial trains `epochs` epochs (Hyperband may stop
    it earlier); no new trial starts once it could overrun the budget. The study has a fixed
    name: Hyperband assigns brackets by a hash of it."""
    study = optuna.create_study(
        study_name=f"{name}-{seed}", direction="maximize", sampler=sampler, pruner=pruner
    )
    run = Run()

    def train(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in task.space.items()}
        hp = objective.hyperparameters(params)
        ran = [0]
        try:
            history = fit(
                objective.build(hp), objective.train, objective.val, epochs=epochs,
                lr=hp["lr"], optimizer="momentum", weight_decay=hp["weight_decay"],
                batch_size=64, seed=seed, callbacks=[_EpochReport(trial, ran)],
            )  # fmt: skip
        except optuna.TrialPruned:
            run.trials.append((ran[0], None))
            raise
        accuracy = history.last("val_accuracy")
        accuracy = accuracy if accuracy is not None and math.isfinite(accuracy) else 0.0
        run.trials.append((epochs, accuracy))
        return accuracy

    def stop_at_budget(study: optuna.Study, _trial) -> None:
        if run.spent + epochs > budget:
            study.stop()

    study.optimize(train, callbacks=[stop_at_budget])
    return run


def babysit_method(
    task: Task, objective: ModelObjective, budget: int, seed: int, folder: Path, promote: bool
) -> Run:
    """babysit.search; a trial's cost is the steps it trained itself (a continued trial's
    earlier epochs were counted when its parent trained them, earlier in the run)."""
    steps_per_epoch = math.ceil(len(objective.train) / task.fixed["batch_size"])
    space = {n: {"low": lo, "high": hi, "log": log} for n, (lo, hi, log) in task.space.items()}
    tag = f"{'p' if promote else 'n'}-{seed}-{abs(hash(task.name)) % 10**6}"
    result = search(
        objective,
        space,
        babysit_stages(budget, promote),
        storage=f"journal:{folder}/babysit-{tag}.journal",
        study_name=f"bench-{tag}",
        seed=seed,
        checkpoints=folder / f"checkpoints-{tag}",
    )
    run = Run()
    finished = [t for t in result.trials if t.state.is_finished()]
    for trial in sorted(finished, key=lambda t: t.datetime_complete):
        cost = trial.user_attrs.get(STEPS_ATTR, 0) / steps_per_epoch
        accuracy = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        run.trials.append((cost, accuracy))
    return run


def _grid_points(low, high, log: bool, count: int) -> list:
    if log:
        values = [low * (high / low) ** (i / (count - 1)) for i in range(count)]
    else:
        values = [low + (high - low) * i / (count - 1) for i in range(count)]
    return [round(v) for v in values] if isinstance(low, int) else values


def run_seed(task: Task, seed: int, budget: int, folder: Path, methods) -> dict[str, Run]:
    objective = ModelObjective("digits", "mlp", task.fixed, "standardize", seed=seed)
    grid = max(2, int((budget / TRIAL_EPOCHS) ** (1 / len(task.space))))
    points = {n: _grid_points(*spec, grid) for n, spec in task.space.items()}
    nop = optuna.pruners.NopPruner()
    hyperband = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=HYPERBAND_MAX_EPOCHS, reduction_factor=3
    )
    grid_sampler = optuna.samplers.GridSampler(points, seed=seed)
    random_sampler = optuna.samplers.RandomSampler(seed=seed)
    tpe = optuna.samplers.TPESampler(seed=seed)
    runs = {
        "grid": lambda: optuna_method(
            "grid", task, objective, grid_sampler, nop, TRIAL_EPOCHS, budget, seed
        ),
        "random": lambda: optuna_method(
            "random", task, objective, random_sampler, nop, TRIAL_EPOCHS, budget, seed
        ),
        "tpe+hb": lambda: optuna_method(
            "tpe+hb", task, objective, tpe, hyperband, HYPERBAND_MAX_EPOCHS, budget, seed
        ),
        "babysit": lambda: babysit_method(task, objective, budget, seed, folder, True),
        "no-promo": lambda: babysit_method(task, objective, budget, seed, folder, False),
    }
    return {method: runs[method]() for method in methods}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _epochs(value: float | None) -> str:
    return "never" if value is None or math.isinf(value) else f"{value:.0f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or math.isinf(value) or math.isinf(base):
        return "-"
    return f"{value / base:.2f}"


def _seed_job(job: tuple) -> dict[str, Run]:
    task, seed, budget, folder, methods = job
    torch.set_num_threads(1)
    return run_seed(task, seed, budget, folder, methods)


def each_seed(tasks, seeds: range, budget: int, folder: Path, methods, jobs: int):
    """Every method on every (task, seed), in that order; with jobs > 1 in that many
    processes (each on one torch thread: the figures are epochs, so they do not change)."""
    work = [(task, seed, budget, folder, methods) for task in tasks for seed in seeds]
    if jobs <= 1:
        yield from map(_seed_job, work)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_seed_job, work)


def run_task(task: Task, seeds: range, budget: int, methods, runs_of_seeds) -> dict:
    """Every method on every seed of one task (`runs_of_seeds`: their runs, in seed order,
    from `each_seed`); prints a line per seed, returns the summary."""
    stages = babysit_stages(budget)
    print(f"\n== {task.describe()}; seeds {seeds.start}-{seeds.stop - 1}, {budget} epochs each")
    print(
        f"  (a) grid, (b) random: {TRIAL_EPOCHS}-epoch trials; "
        f"(c) TPE + Hyperband, 1..{HYPERBAND_MAX_EPOCHS} epochs"
    )
    plan = " -> ".join(
        f"{s.trials} x {s.budget}" + (f" ({s.promote} continued)" if s.promote else "")
        for s in stages
    )
    print(f"  babysit: {plan}, 3x loss abort; no-promo: the same stages, every trial afresh")
    results: dict[str, list[tuple[Run, float]]] = {m: [] for m in methods}
    for seed in seeds:
        runs = next(runs_of_seeds)
        target = max(r.best for r in runs.values()) - TARGET_MARGIN
        line = []
        for method, run in runs.items():
            results[method].append((run, target))
            reached = run.epochs_to(target)
            line.append(f"{method} {run.best:.3f}/{_epochs(reached)}")
        print(f"seed {seed}: target {target:.3f}; best/epochs: " + ", ".join(line), flush=True)
    summary = {}
    for method in methods:
        bests = [run.best for run, _ in results[method]]
        reached = [run.epochs_to(t) for run, t in results[method]]
        hits = [r for r in reached if r is not None]
        spent = [run.spent for run, _ in results[method]]
        everywhere = statistics.median([math.inf if r is None else r for r in reached])
        summary[method] = (_median(bests), len(hits), _median(hits), _median(spent), everywhere)
    base = summary.get("tpe+hb")
    print()
    columns = ("best acc", "reached", "epochs", "x (c)", "all seeds", "x (c)", "spent")
    widths = (9, 8, 7, 7, 9, 7, 6)
    print(f"{'method':<9} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for method, (best, hits, epochs, spent, everywhere) in summary.items():
        print(
            f"{method:<9} {best:>9.4f} {hits:>5}/{len(seeds):<2} {_epochs(epochs):>7} "
            f"{_ratio(epochs, base and base[2]):>7} {_epochs(everywhere):>9} "
            f"{_ratio(everywhere, base and base[4]):>7} {spent:>6.0f}"
        )
    if base and "babysit" in summary:
        d_best, d_hits, d_epochs, _, _ = summary["babysit"]
        ok = (
            d_hits == len(seeds)
            and d_epochs is not None
            and base[2] is not None
            and d_epochs <= TPE_RATIO * base[2]
            and d_best >= base[0]
        )
        print(
            f"babysit vs TPE+Hyperband: reached the target in {d_hits}/{len(seeds)} seeds, "
            f"median epochs {_epochs(d_epochs)} vs {_epochs(base[2])} "
            f"({_ratio(d_epochs, base[2])}x, target <= {TPE_RATIO}x), median best "
            f"{d_best:.4f} vs {base[0]:.4f}: target {'met' if ok else 'not met'}"
        )
    return summary


def main() -> None:
    global PLAN
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("--first-seed", type=int, default=0, help="9 for the held-out seeds")
    parser.add_argument("--budget", type=int, default=150, help="epochs per method per seed")
    parser.add_argument("--quick", action="store_true", help="3 seeds, 50 epochs")
    parser.add_argument("--tasks", default="1,2", help="which tasks: 1 (MLP), 2 (BatchNorm net)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes")
    parser.add_argument(
        "--plan",
        default=",".join(f"{n}x{e}" + (f":{p}" if p else "") for n, e, p in PLAN),
        help="babysit's stages for 150 epochs: TRIALSxEPOCHS[:PROMOTED],...",
    )
    args = parser.parse_args()
    PLAN = parse_plan(args.plan)
    count, budget = (3, 50) if args.quick else (args.seeds, args.budget)
    seeds = range(args.first_seed, args.first_seed + count)
    methods = [m for m in args.methods.split(",") if m]
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    start = time.perf_counter()
    tasks = [TASKS[int(index) - 1] for index in args.tasks.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        runs = each_seed(tasks, seeds, budget, Path(folder), methods, args.jobs)
        for task in tasks:
            run_task(task, seeds, budget, methods, runs)
    print(
        "\nbest acc: median over seeds of the best validation accuracy; reached: seeds in which "
        f"the method came within {TARGET_MARGIN:.0%} (absolute) of the best any method found; "
        "epochs: median cumulative epochs until then, over the seeds where it did; all seeds: "
        "the median over every seed, a seed that never got there counting as never; spent: "
        "median epochs used; x (c): ratio to TPE + Hyperband."
    )
    print(f"wall time {time.perf_counter() - start:.0f} s (torch threads 1)")


if __name__ == "__main__":
    main()
