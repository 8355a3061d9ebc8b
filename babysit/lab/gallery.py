"""The lab's output: a rich table of claims per experiment, and the HTML gallery (index.html
with every experiment's claims, PASS/FAIL badges and figures).

The page only: each experiment draws its own figures (`figures(data)` in its module) from a
Result's `data`, which is also saved as `NAME.json` next to the gallery, so the gallery can
be rebuilt from the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape as markup
from rich.table import Table

from babysit._io import write_atomic, write_json
from babysit.errors import UsageError
from babysit.lab.base import Claim, Experiment, Result
from babysit.report.html import Section, escape, figure_png, image, page, table
from babysit.report.terminal import stdout

__all__ = [
    "check_out_dir",
    "claims_table",
    "experiment_page",
    "experiments_table",
    "figures",
    "gallery",
    "load_results",
    "save",
    "section_html",
    "summary_table",
]

# --- terminal -----------------------------------------------------------------------------

_VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "KNOWN": "bold yellow"}


def _verdict(claim: Claim) -> str:
    return "KNOWN" if claim.known_failure else claim.verdict


def _verdict_text(claim: Claim) -> str:
    return "FAIL (known)" if claim.known_failure else claim.verdict


def claims_table(result: Result, console: Console = stdout) -> None:
    """One row per claim: what it says, its source, the threshold, the measurement, PASS/FAIL;
    then the known exceptions, spelled out."""
    table_ = Table(
        title=f"[bold]{markup(result.name)}[/]: {markup(result.title)}",
        caption=f"{markup(result.setting)}\n{result.seconds:.0f} s wall, "
        f"{result.cpu_seconds:.0f} s CPU on {markup(result.device)}, scale {result.scale}",
        show_lines=True,
        expand=True,
    )
    table_.add_column("claim", ratio=4)
    table_.add_column("source", ratio=2)
    table_.add_column("expected", ratio=2)
    table_.add_column("measured", ratio=3)
    table_.add_column("verdict", no_wrap=True)
    for claim in result.claims:
        verdict = _verdict(claim)
        table_.add_row(
            markup(claim.text),
            markup(claim.source),
            markup(claim.expected),
            markup(claim.measured),
            f"[{_VERDICT_STYLE[verdict]}]{_verdict_text(claim)}[/]",
        )
    console.print(table_)
    for claim in result.claims:
        if claim.known_failure:
            console.print(f"[yellow]known exception:[/] {markup(claim.exception)}")


def experiments_table(experiments: Sequence[Experiment], console: Console = stdout) -> None:
    """`babysit lab --list`: each experiment's name and what it checks."""
    table_ = Table(title="babysit lab experiments", show_lines=True)
    table_.add_column("name", no_wrap=True)
    table_.add_column("what it checks")
    for experiment in experiments:
        table_.add_row(markup(experiment.name), markup(experiment.description))
    console.print(table_)


def summary_table(results: Sequence[Result], console: Console = stdout) -> None:
    """One row per experiment: claims passed, failed, known exceptions, and time taken."""
    table_ = Table(title="babysit lab")
    for column in ("experiment", "PASS", "FAIL", "known", "wall s", "CPU s"):
        table_.add_column(column, justify="left" if column == "experiment" else "right")
    for result in results:
        passed = sum(c.passed for c in result.claims)
        known = sum(c.known_failure for c in result.claims)
        failed = len(result.claims) - passed - known
        table_.add_row(
            markup(result.name),
            str(passed),
            f"[bold red]{failed}[/]" if failed else "0",
            f"[yellow]{known}[/]" if known else "0",
            f"{result.seconds:.0f}",
            f"{result.cpu_seconds:.0f}",
        )
    console.print(table_)


# --- saving -------------------------------------------------------------------------------


def check_out_dir(out: str | Path) -> Path:
    """The gallery folder, created if needed; a UsageError if it cannot be."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a folder: give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the gallery folder {str(path)!r}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"the gallery folder {str(path)!r} is not writable: choose another")
    return path


def load_results(out: str | Path, order: Sequence[str] = ()) -> list[Result]:
    """Every lab result saved in `out` (NAME.json), in `order`, then by name; files that are
    not lab results are left alone."""
    results = {}
    for path in sorted(Path(out).glob("*.json")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            result = Result.from_dict(d)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if result.name == path.stem:
            results[result.name] = result
    rank = {name: i for i, name in enumerate(order)}
    return [results[n] for n in sorted(results, key=lambda n: (rank.get(n, len(rank)), n))]


def save(result: Result, out: str | Path, order: Sequence[str] = ()) -> Path:
    """Save `result` as out/NAME.json and its page out/NAME.html, then rebuild out/index.html
    from every result in the folder (their sections are read back from their pages, so only
    this experiment's figures are drawn). Returns the index path."""
    path = check_out_dir(out)
    write_json(path / f"{result.name}.json", result.to_dict(), indent=1)
    write_atomic(path / f"{result.name}.html", experiment_page(result, section_html(result)))
    index = path / "index.html"
    results = load_results(path, order)
    write_atomic(index, gallery(results, [_saved_section(path, r) for r in results]))
    return index


def _saved_section(folder: Path, result: Result) -> str:
    """An experiment's section, from its saved page when that page is at least as new as its
    result; drawn again (and the page rewritten) otherwise."""
    page_path, json_path = folder / f"{result.name}.html", folder / f"{result.name}.json"
    try:
        if page_path.stat().st_mtime >= json_path.stat().st_mtime:
            text = page_path.read_text(encoding="utf-8")
            start, end = text.find(_SECTION_START), text.find(_SECTION_END)
            if 0 <= start < end:
                return text[start + len(_SECTION_START) : end]
    except OSError:
        pass
    section = section_html(result)
    write_atomic(page_path, experiment_page(result, section))
    return section


# --- the gallery --------------------------------------------------------------------------

_BADGE = {"PASS": "pass", "FAIL": "fail", "KNOWN": "sev-warning"}


def _badge(claim: Claim) -> str:
    return (
        f'<span class="{_BADGE[_verdict(claim)]}" style="white-space: nowrap">'
        f"{escape(_verdict_text(claim))}</span>"
    )


class _Anchored(Section):
    """A Section whose heading can be linked to (#name)."""

    def __init__(self, anchor: str, title: str):
        super().__init__(title)
        self.anchor = anchor

    def render(self) -> str:
        return f'<section id="{escape(self.anchor)}">{super().render()[len("<section>") :]}'


def _claims_html(result: Result) -> str:
    rows = []
    for claim in result.claims:
        note = (
            f'<br><span class="muted">Known exception: {escape(claim.exception)}</span>'
            if claim.known_failure
            else ""
        )
        rows.append(
            [
                escape(claim.text) + note,
                escape(claim.source),
                escape(claim.expected),
                escape(claim.measured),
                _badge(claim),
            ]
        )
    return table(["claim", "source", "expected", "measured", "verdict"], rows, raw=True)


_SECTION_START = "<!-- babysit-lab-section -->"
_SECTION_END = "<!-- /babysit-lab-section -->"
_SUBTITLE = (
    "CS231n Lecture 6 and the papers behind it, reproduced on digits and generated data, "
    "each claim checked PASS/FAIL."
)


class _Raw(Section):
    """A block of ready HTML placed in a page as is."""

    def __init__(self, html_text: str):
        super().__init__("")
        self.html_text = html_text

    def render(self) -> str:
        return self.html_text


def section_html(result: Result) -> str:
    """One experiment's section: what it shows, its setting, its claims with PASS/FAIL badges,
    and its figures (PNG data URIs)."""
    section = _Anchored(result.name, f"{result.name}: {result.title}")
    section.add(f"<p>{escape(result.summary)}</p>")
    section.add(f'<p class="muted">Setting: {escape(result.setting)}.</p>')
    section.add(_claims_html(result))
    for png, caption in figures(result):
        section.add(image(png, alt=caption, caption=caption))
    section.add(
        f'<p class="muted">Seeds {escape(", ".join(map(str, result.seeds)))}; '
        f"{result.seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU on "
        f"{escape(result.device)}, scale {escape(result.scale)}.</p>"
    )
    return _SECTION_START + section.render() + _SECTION_END


def experiment_page(result: Result, section: str) -> str:
    """A page with one experiment's section, and a link back to the gallery."""
    back = _Raw('<p><a href="index.html">&larr; all experiments</a></p>')
    return page(f"babysit lab: {result.name}", [back, _Raw(section)], subtitle=_SUBTITLE)


def gallery(results: Sequence[Result], sections: Sequence[str] | None = None) -> str:
    """The whole gallery page: a summary with links, then one section per experiment
    (`sections`, as `section_html` makes them; drawn here when not given)."""
    overview = _Anchored("summary", "Summary")
    rows = []
    for result in results:
        badges = " ".join(_badge(c) for c in result.claims)
        rows.append(
            [
                f'<a href="#{escape(result.name)}">{escape(result.name)}</a>',
                escape(result.title),
                badges,
                escape(f"{result.seconds:.0f} s on {result.device} ({result.scale})"),
            ]
        )
    overview.add(table(["experiment", "what it shows", "claims", "time"], rows, raw=True))
    overview.add(
        '<p class="muted">PASS and FAIL are decided by the threshold in each claim\'s '
        '"expected" column. "FAIL (known)" is a claim that does not reproduce at this scale; '
        "its note says why and what would show it. Ranges are [min, max] over seeds; a "
        "difference inside them counts as not shown. Each experiment also has a page of its "
        "own, NAME.html, and its numbers in NAME.json.</p>"
    )
    if sections is None:
        sections = [section_html(r) for r in results]
    return page("babysit lab", [overview, *(_Raw(s) for s in sections)], subtitle=_SUBTITLE)


def figures(result: Result) -> list[tuple[bytes, str]]:
    """The experiment's figures as (PNG bytes, caption); none for a name not registered."""
    from babysit.lab import EXPERIMENTS

    experiment = EXPERIMENTS.get(result.name)
    if experiment is None or experiment.figures is None:
        return []
    return [(figure_png(fig), caption) for fig, caption in experiment.figures(result.data)]
