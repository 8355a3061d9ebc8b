"""The lecture's experiments, reproduced and checked: `babysit lab NAME|all`.

Each experiment (one module of `babysit.lab.experiments`) states the claims it checks with
their sources, measures them on the bundled digits data or generated data, and decides each
one PASS or FAIL by a threshold stated next to it. `run(names, scale, out, seed)` runs some of
them and, with `out`, writes the HTML gallery. See docs/lab.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from babysit.errors import UsageError
from babysit.lab.base import SCALES, Claim, Experiment, Result
from babysit.lab.experiments import discover

__all__ = ["EXPERIMENTS", "SCALES", "Claim", "Experiment", "Result", "resolve", "run"]


EXPERIMENTS: dict[str, Experiment] = discover()
"""Name -> experiment, in the order the lecture meets them (each module's ORDER)."""


def resolve(names: str | Iterable[str]) -> list[str]:
    """Experiment names from "all", one name, or several; unknown names raise UsageError."""
    wanted = [names] if isinstance(names, str) else list(names)
    if wanted == ["all"] or not wanted:
        return list(EXPERIMENTS)
    unknown = [n for n in wanted if n not in EXPERIMENTS]
    if unknown:
        raise UsageError(
            f"unknown lab experiment {unknown[0]!r}; choose one of {', '.join(EXPERIMENTS)} "
            f"or 'all' (babysit lab --list describes them)"
        )
    return list(dict.fromkeys(wanted))


def run(
    names: str | Iterable[str] = "all",
    scale: str = "small",
    out: str | Path | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run the named experiments in order; return their Results.

    With `out`, each result is saved to `out/NAME.json` as soon as it is done and the
    gallery `out/index.html` is rebuilt from every result in the folder, so that results of
    earlier runs stay and a failure later keeps what finished. `progress(name, done, total,
    what)` reports each experiment's units of work; `on_result` gets each Result.
    """
    chosen = resolve(names)
    if scale not in SCALES:
        raise UsageError(f"unknown lab scale {scale!r}; choose one of {', '.join(SCALES)}")
    if out is not None:
        from babysit.lab.gallery import check_out_dir

        check_out_dir(out)
    results = []
    for name in chosen:
        report = None if progress is None else _named(progress, name)
        result = EXPERIMENTS[name](scale=scale, seed=seed, device=device, progress=report)
        results.append(result)
        if out is not None:
            from babysit.lab.gallery import save

            save(result, out, order=list(EXPERIMENTS))
        if on_result is not None:
            on_result(result)
    return results


def _named(progress: Callable[[str, int, int, str], None], name: str):
    def report(done: int, total: int, what: str) -> None:
        progress(name, done, total, what)

    return report
