"""The checkup's Report: its findings, the measurements behind them, and the ways to show
them (a rich table in the terminal, report.json, a self-contained report.html with plots).

report.json holds everything; `Report.load(dir)` reads it back and `save` can draw the HTML
and the PNGs again from it alone (`babysit report DIR`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit._io import json_safe, json_text, write_atomic
from babysit.checks.base import Check
from babysit.checks.findings import CODES, SEVERITIES, Finding
from babysit.checks.registry import CHECKUP, check_of
from babysit.errors import UsageError

__all__ = ["JSON_NAME", "HTML_NAME", "Report"]

JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Bumped when the JSON shape changes incompatibly (documented in docs/checkup.md).
SCHEMA_VERSION = 1

_SEVERITY_STYLE = {"error": "bold white on red", "warning": "black on yellow", "info": "blue"}


@dataclass
class Report:
    """What `babysit.checkup` found. `findings` in the order the checks ran; `measurements`
    the numbers behind them (per-layer statistics, the range test's curve, ...); `meta` the
    model, data, settings, version and timings."""

    findings: list[Finding] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # --- reading -------------------------------------------------------------------------

    @property
    def summary(self) -> dict[str, int]:
        """Number of findings per severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    @property
    def ok(self) -> bool:
        """No `error` finding: nothing stops training from working."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def by_severity(self) -> list[Finding]:
        """Findings sorted errors first, then warnings, then info (stable within each)."""
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(self.findings, key=lambda f: order[f.severity])

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in self.summary.items())
        lines = [f"babysit checkup: {counts}"]
        lines += [f"  [{f.severity}] {f.code}: {f.message}" for f in self.by_severity()]
        return "\n".join(lines)

    # --- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape: findings, summary, measurements, meta (docs/checkup.md)."""
        return json_safe(
            {
                "findings": [f.to_dict() for f in self.findings],
                "summary": self.summary,
                "measurements": self.measurements,
                "meta": {"schema": SCHEMA_VERSION, **self.meta},
            }
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json_text(self.to_dict(), indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            raise UsageError("not a babysit report: expected a JSON object with a 'findings' list")
        findings = []
        for i, item in enumerate(data["findings"]):
            try:
                findings.append(Finding.from_dict(item))
            except (KeyError, TypeError, ValueError) as e:
                raise UsageError(
                    f"finding {i} of the report is malformed ({e}); known codes are "
                    f"{', '.join(CODES)}"
                ) from None
        parts = {key: data.get(key) or {} for key in ("measurements", "meta")}
        for key, value in parts.items():
            if not isinstance(value, dict):
                raise UsageError(
                    f"not a babysit report: its {key!r} is a {type(value).__name__}, expected a "
                    f"JSON object; write it again with `babysit doctor --out DIR`"
                )
        return cls(findings, dict(parts["measurements"]), dict(parts["meta"]))

    # --- files ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike, write_json: bool = True) -> Path:
        """Write report.json, report.html (self-contained) and one PNG per plot into
        `directory` (created if needed); return the HTML's path. Files are replaced
        atomically, and nothing else in the folder is touched. `write_json=False` only
        re-draws the HTML and PNGs (what `babysit report DIR` does)."""
        folder = Path(directory).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"cannot save the report: {str(folder)!r} is a file, not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if write_json:
                write_atomic(folder / JSON_NAME, (self.to_json() + "\n").encode())
            page, figures = self.render_html()
            for name, png in figures.items():
                write_atomic(folder / name, png)
            write_atomic(folder / HTML_NAME, page.encode())
        except PermissionError as e:
            raise UsageError(f"cannot write the report into {str(folder)!r}: {e}") from None
        return folder / HTML_NAME

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Report:
        """Read a report saved by `save` (its report.json)."""
        folder = Path(directory).expanduser()
        path = folder / JSON_NAME if folder.is_dir() else folder
        if not path.is_file():
            raise UsageError(
                f"no {JSON_NAME} in {str(folder)!r}: save one with `babysit doctor --out "
                f"{folder}` or report.save(...)"
            )
        try:
            data = json.loads(path.read_text())
        except RecursionError:
            raise UsageError(
                f"{path} nests too deeply to be a babysit report: write it again with "
                f"`babysit doctor --out {folder}`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(
                f"{path} is not valid JSON ({e}): was it written by babysit?"
            ) from None
        return cls.from_dict(data)

    # --- terminal ------------------------------------------------------------------------

    def table(self):
        """A rich Table, errors first: severity, code, layer, and what was found with its
        fix underneath (plain text: messages and layer names are never read as rich markup)."""
        from rich.table import Table
        from rich.text import Text

        counts = ", ".join(f"{n} {s}" for s, n in self.summary.items())
        table = Table(title=f"babysit checkup: {counts}", show_lines=True, expand=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("code", overflow="fold", style="bold")
        table.add_column("layer", overflow="fold")
        table.add_column("finding and fix", ratio=1, overflow="fold")
        for f in self.by_severity():
            body = Text(f.message)
            if f.fix:
                body.append("\nfix: ", style="bold green")
                body.append(f.fix)
            table.add_row(
                Text(f.severity, style=_SEVERITY_STYLE[f.severity]),
                f.code,
                Text(f.layer or ""),
                body,
            )
        return table

    def print(self, console=None) -> None:
        """Print the summary table (to stdout by default)."""
        from rich.console import Console

        console = console or Console()
        if self.findings:
            console.print(self.table())
        else:
            console.print("[bold green]babysit checkup: no findings[/]")
        duration = self.meta.get("duration_s")
        if duration is not None:
            console.print(f"[dim]checked in {duration:.1f} s[/]")

    # --- HTML ----------------------------------------------------------------------------

    def render_html(self) -> tuple[str, dict[str, bytes]]:
        """The HTML page and its figures as PNG bytes by file name (also embedded in the
        page, so that report.html opens alone)."""
        from babysit.report import html

        figures = html.Figures()
        figure = figures.add

        sections = [self._findings_section(html), self._checks_section(html)]
        for check in CHECKUP:
            section = self._figures_section(html, check, figure)
            if section is not None:
                sections.append(section)
        sections.append(self._meta_section(html))
        counts = ", ".join(f"{n} {s}" for s, n in self.summary.items())
        subtitle = f"{self.meta.get('model', 'model')} on {self.meta.get('data', 'data')}: {counts}"
        return html.page("babysit checkup", sections, subtitle), figures

    def _figures_section(self, html, check: Check, figure) -> Any:
        """The section of `check`'s figures (None when it has none or none could be drawn);
        the init audit's gets the per-layer table too."""
        from babysit.report import plots

        m = self.measurements
        drawn = [
            figure(f.file, getattr(plots, f.plot)(*(m.get(k) for k in f.inputs)), f.alt, f.caption)
            for f in check.figures
            if m.get(f.inputs[0])  # a figure needs its first measurement; the rest may be None
        ]
        if not any(drawn):
            return None
        section = html.Section(check.section or check.title or check.name)
        layers = m.get("layers") or []
        if check.key == "init" and layers:
            section.body = (
                "<p>One forward and backward pass of a data batch through the untrained model "
                f"({html.escape(m.get('init', {}).get('inputs', 'the data as given'))}). "
                "In a healthy network the activations' std and the gradient's norm stay "
                "roughly constant from layer to layer (CS231n Lecture 6).</p>"
            )
        for part in drawn:
            section.add(part)
        if check.key == "init" and layers:
            section.add(self._layer_table(html, layers))
        return section

    def _findings_section(self, html) -> Any:
        section = html.Section("Findings")
        if not self.findings:
            section.body = '<p><span class="pass">pass</span> no findings.</p>'
            return section
        rows = [
            (
                f'<span class="sev-{f.severity}">{f.severity}</span>',
                f"<code>{html.escape(f.code)}</code>",
                html.escape(f.layer or ""),
                html.escape(f.message),
                html.escape(f.fix),
            )
            for f in self.by_severity()
        ]
        section.body = html.table(["severity", "code", "layer", "message", "fix"], rows, raw=True)
        return section

    @staticmethod
    def _layer_table(html, layers: Iterable[dict]) -> str:
        def num(v: Any, fmt: str = ".3g") -> str:
            return "" if v is None else format(v, fmt)

        rows = [
            (
                s["name"],
                s.get("kind", ""),
                num(s.get("mean")),
                num(s.get("std")),
                num(s.get("grad_std")),
                "" if s.get("dead_fraction") is None else f"{s['dead_fraction']:.0%}",
                "" if s.get("saturated_fraction") is None else f"{s['saturated_fraction']:.0%}",
            )
            for s in layers
        ]
        return html.table(["layer", "kind", "mean", "std", "grad std", "dead", "saturated"], rows)

    def _meta_section(self, html) -> Any:
        section = html.Section("About this run")
        shown = {
            "model": self.meta.get("model"),
            "data": self.meta.get("data"),
            "loss": self.meta.get("loss"),
            "optimizer": self.meta.get("optimizer"),
            "learning rate": self.meta.get("lr") or "none given: found by the range test",
            "mode": "quick" if self.meta.get("quick", True) else "full (with a training run)",
            "seed": self.meta.get("seed"),
            "device": self.meta.get("device"),
            "versions": f"babysit {self.meta.get('babysit')}, torch {self.meta.get('torch')}",
        }
        duration = self.meta.get("duration_s")
        if isinstance(duration, int | float):
            shown["duration"] = f"{duration:.1f} s"
        rows = [(k, str(v)) for k, v in shown.items() if v is not None]
        section.body = html.table(["setting", "value"], rows)
        timings = self.meta.get("timings_s") or {}
        if timings:
            section.add(
                "<p class='muted'>time per check: "
                + html.escape(", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
                + "</p>"
            )
        return section

    def check_rows(self) -> list[tuple[str, str, list[Finding]]]:
        """The "what was checked" rows: (check, measured against expected, the findings it
        raised), for the checks that left measurements. The report does not judge: each
        finding names its check (`row_of`)."""
        raised: dict[str | None, list[Finding]] = {}
        for f in self.findings:
            raised.setdefault(row_of(f), []).append(f)
        rows = []
        for check in CHECKUP:
            if check.title is None:
                continue
            measured = check.describe(self.measurements)
            if measured is not None:
                rows.append((check.title, measured, raised.get(check.key, [])))
        return rows

    def _checks_section(self, html) -> Any:
        """One row per check: what it measured against what it expects, and the codes it
        raised; "ok" only when none of them is a warning or an error."""
        section = html.Section("What was checked")
        rows = []
        for title, measured, found in self.check_rows():
            codes = dict.fromkeys(f.code for f in found)
            status = ", ".join(f"<code>{html.escape(c)}</code>" for c in codes)
            if all(f.severity == "info" for f in found):
                status = '<span class="pass">ok</span>' + (f" ({status})" if status else "")
            rows.append((html.escape(title), html.escape(measured), status))
        section.body = html.table(["check", "measured (expected)", "findings"], rows, raw=True)
        return section


def row_of(finding: Finding) -> str | None:
    """The key of the "what was checked" row that shows `finding` (None: no row): that of
    the check that raised it. Reports saved before findings named their check place them by
    the check in their evidence, the step a CHECK_FAILED names, or the one check that
    raises their code."""
    evidence = finding.evidence if isinstance(finding.evidence, dict) else {}
    check = check_of(finding.check or evidence.get("check"))
    if check is None and finding.code == "CHECK_FAILED":
        check = next((c for c in CHECKUP if c.name == evidence.get("step")), None)
    if check is None and finding.check is None:
        owners = [c for c in CHECKUP if finding.code in c.codes]
        check = owners[0] if len(owners) == 1 else None
    return check.row_key if check is not None else None
