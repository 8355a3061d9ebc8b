"""The checkup's Report: its findings, the measurements behind them, and the ways to show
them (a rich table in the terminal, report.json, a self-contained report.html with plots).

report.json holds everything; `Report.load(dir)` reads it back and `save` can draw the HTML
and the PNGs again from it alone (`babysit report DIR`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babysit._io import write_atomic
from babysit.checks.findings import CODES, SEVERITIES, Finding
from babysit.errors import UsageError

__all__ = ["JSON_NAME", "HTML_NAME", "Report"]

JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Bumped when the JSON shape changes incompatibly (documented in docs/checkup.md).
SCHEMA_VERSION = 1

_SEVERITY_STYLE = {"error": "bold white on red", "warning": "black on yellow", "info": "blue"}


def json_safe(value: Any) -> Any:
    """A copy of `value` that json.dumps(allow_nan=False) accepts: non-finite floats become
    None, tuples lists, tensors and NumPy values plain Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return json_safe(value.tolist())
    return str(value)


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
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

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
        from babysit.report import html, plots

        m = self.measurements
        figures: dict[str, bytes] = {}

        def figure(name: str, fig, alt: str, caption: str) -> str:
            if fig is None:
                return ""
            png = html.figure_png(fig)
            figures[name] = png
            return html.image(png, alt, caption)

        sections = [self._findings_section(html), self._checks_section(html)]
        layers = m.get("layers") or []
        init_section = html.Section("Activations and gradients at init")
        init_section.body = (
            "<p>One forward and backward pass of a data batch through the untrained model "
            f"({html.escape(m.get('init', {}).get('inputs', 'the data as given'))}). "
            "In a healthy network the activations' std and the gradient's norm stay roughly "
            "constant from layer to layer (CS231n Lecture 6).</p>"
        )
        init_section.add(
            figure(
                "activations.png",
                plots.activation_figure(layers, m.get("init")),
                "per-layer activation statistics",
                "Left: mean and std of each layer's output. Right: the size of the loss's "
                "gradient with respect to each layer's output (per example), log scale.",
            )
        )
        init_section.add(
            figure(
                "histograms.png",
                plots.histogram_figure(layers),
                "activation histograms",
                "Distribution of each layer's outputs.",
            )
        )
        if layers:
            init_section.add(self._layer_table(html, layers))
            sections.append(init_section)
        if m.get("lr_range") or m.get("lr"):
            lr_section = html.Section("Learning rate")
            lr_section.add(
                figure(
                    "lr_range.png",
                    plots.lr_figure(m.get("lr_range") or {}, m.get("lr")),
                    "learning-rate range test",
                    "The learning rate grows exponentially each step (Smith 2017, "
                    "fastai lr_find); the usable range is where the smoothed loss "
                    "falls; the suggestion is a tenth of the rate at its lowest.",
                )
            )
            lr_section.add(
                figure(
                    "update_ratios.png",
                    plots.update_ratio_figure(m.get("lr") or {}),
                    "update/weight ratios",
                    "A short run at the chosen rate; right, the median of "
                    "||dW|| / ||W|| per step for each layer (CS231n: ~1e-3; red "
                    "zones are flagged).",
                )
            )
            sections.append(lr_section)
        if m.get("overfit"):
            sections.append(
                html.Section("Overfitting a tiny subset").add(
                    figure(
                        "overfit.png",
                        plots.overfit_figure(m["overfit"]),
                        "tiny-subset training",
                        "With regularization off a healthy model reaches 100% training accuracy "
                        "and a loss near 0 on ~20 examples (CS231n).",
                    )
                )
            )
        if m.get("training", {}).get("epochs"):
            sections.append(
                html.Section("Training run").add(
                    figure(
                        "training.png",
                        plots.training_figure(m["training"]),
                        "training curves",
                        "A short real run: a large train/val gap is overfitting; low accuracy on "
                        "both is underfitting.",
                    )
                )
            )
        sections.append(self._meta_section(html))
        counts = ", ".join(f"{n} {s}" for s, n in self.summary.items())
        subtitle = f"{self.meta.get('model', 'model')} on {self.meta.get('data', 'data')}: {counts}"
        return html.page("babysit checkup", sections, subtitle), figures

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
        raised), for the checks that left measurements. The report does not judge: the
        findings are placed by `row_of`."""
        raised: dict[str | None, list[Finding]] = {}
        for f in self.findings:
            raised.setdefault(row_of(f), []).append(f)
        rows = []
        for step, title, describe in _CHECK_ROWS:
            measured = describe(self.measurements)
            if measured is not None:
                rows.append((title, measured, raised.get(step, [])))
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


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "?" if not isinstance(value, int | float) else format(value, spec)


def _describe_data(m: dict) -> str | None:
    d = m.get("data")
    if not d or "offset_ratio" not in d:
        return None
    return (
        f"mean/spread ratio {_fmt(d['offset_ratio'], '.2f')} (<= 0.5); feature std "
        f"{_fmt(d['std_rms'])} (0.1..3); values {_fmt(d.get('min'))}..{_fmt(d.get('max'))}"
    )


def _describe_architecture(m: dict) -> str | None:
    a = m.get("architecture")
    if not a or a.get("weight_layers") is None:
        return None
    return (
        f"{len(a['weight_layers'])} weight layer(s), output {tuple(a.get('output_shape') or [])}"
        f" (no hidden sigmoid, raw scores into the loss, a nonlinearity between linear maps)"
    )


def _describe_init(m: dict) -> str | None:
    i = m.get("init")
    if i is None:
        return None
    if "forward_change" not in i:
        hidden = i.get("hidden_layers")
        return (
            f"{hidden if hidden is not None else '?'} hidden layer(s): depth is judged from 3; "
            f"dead and saturated units checked"
        )
    return (
        f"activation std x{_fmt(i['forward_change'])} over depth (within 10x), gradient "
        f"norm x{_fmt(i['backward_change'])} (within 100x)"
    )


def _describe_initial_loss(m: dict) -> str | None:
    i = m.get("initial_loss")
    if not i or i.get("loss") is None:
        return None
    if i.get("output_scale") is not None:
        return f"outputs {_fmt(i['output_scale'])}x the targets' rms (<= 5x)"
    if i.get("expected") is None:
        return f"{_fmt(i['loss'])} (no reference for this loss)"
    return f"{_fmt(i['loss'])} (uninformed {_fmt(i['expected'])}, ratio within 2.5x)"


def _describe_overfit(m: dict) -> str | None:
    o = m.get("overfit")
    if not o or o.get("final_loss") is None:
        return None
    acc = o.get("final_accuracy")
    acc_text = f"accuracy {acc:.0%}, " if isinstance(acc, int | float) else ""
    return f"{acc_text}loss {_fmt(o['initial_loss'])} -> {_fmt(o['final_loss'])} (100% and near 0)"


def _describe_learnable(m: dict) -> str | None:
    le = m.get("learnable")
    if not le or le.get("held_out_accuracy") is None:
        return None
    linear = le.get("linear_held_out_accuracy")
    return (
        f"held-out accuracy {le['held_out_accuracy']:.0%} (chance {le['chance']:.0%}; must beat it"
        + (
            f"; linear classifier {linear:.0%}, at least half of the way to it)"
            if isinstance(linear, int | float)
            else ")"
        )
    )


def _describe_regularization(m: dict) -> str | None:
    r = m.get("regularization")
    if not r or r.get("rise") is None:
        return None
    return (
        f"fitted loss {_fmt(r['plain']['loss'])} -> {_fmt(r['decayed']['loss'])} with weight "
        f"decay (must rise)"
    )


def _describe_lr(m: dict) -> str | None:
    lr = m.get("lr") or {}
    rng = m.get("lr_range") or {}
    if not rng and not lr:
        return None
    parts = []
    if rng.get("low") is not None:
        parts.append(f"usable {_fmt(rng['low'], '.2g')}..{_fmt(rng['high'], '.2g')}")
    run = lr.get("run") or {}
    if run:
        ratios = [v for v in (run.get("update_ratios") or {}).values() if v is not None]
        parts.append(
            f"at {_fmt(run.get('lr'), '.2g')}: loss {_fmt(run.get('first_loss'))} -> "
            f"{_fmt(run.get('last_loss'))}"
            + (f", update ratios {min(ratios):.1e}..{max(ratios):.1e} (~1e-3)" if ratios else "")
        )
    return "; ".join(parts) or None


def _describe_training(m: dict) -> str | None:
    t = m.get("training") or {}
    if t.get("train_accuracy") is None:
        return None
    linear = t.get("linear_val_accuracy")
    return (
        f"train {t['train_accuracy']:.1%}, val {t['val_accuracy']:.1%} (gap <= 10%"
        + (f"; train >= linear {linear:.1%} - 2%" if linear is not None else "")
        + ")"
    )


_CHECK_ROWS = (
    ("data", "data audit", _describe_data),
    ("architecture", "architecture audit", _describe_architecture),
    ("init", "init audit", _describe_init),
    ("initial_loss", "initial loss", _describe_initial_loss),
    ("overfit", "overfit 20 examples", _describe_overfit),
    ("learnable", "labels learnable", _describe_learnable),
    ("regularization", "regularization", _describe_regularization),
    ("lr", "learning rate", _describe_lr),
    ("training", "training run", _describe_training),
)
# The row that shows each code; None for the bookkeeping codes, which belong to no check.
# Codes that several steps raise (NAN_LOSS, LR_TOO_HIGH, CHECK_FAILED) are placed by the
# step the checkup recorded in their evidence ("check"), this table being the fallback.
# tests/report/test_report.py ties every code in CODES to a row here and to its section
# in docs/checkup.md.
_STEP_OF_CODE: dict[str, str | None] = {
    "DATA_NONFINITE": "data",
    "LABELS_INVALID": "data",
    "DATA_NOT_CENTERED": "data",
    "DATA_NOT_SCALED": "data",
    "SIGMOID_HIDDEN": "architecture",
    "OUTPUT_ACTIVATION": "architecture",
    "NO_NONLINEARITY": "architecture",
    "NO_NORMALIZATION": "architecture",
    "FROZEN_PARAMETERS": "architecture",
    "INIT_VANISHING": "init",
    "INIT_EXPLODING": "init",
    "INIT_SATURATED": "init",
    "INIT_SYMMETRIC": "init",
    "DEAD_UNITS": "init",
    "INIT_LOSS_MISMATCH": "initial_loss",
    "CANNOT_OVERFIT": "overfit",
    "LABELS_UNLEARNABLE": "learnable",
    "WORSE_THAN_LINEAR": "learnable",
    "REG_NO_EFFECT": "regularization",
    "LR_SUGGESTION": "lr",
    "LR_TOO_LOW": "lr",
    "LR_TOO_HIGH": "lr",
    "UPDATE_RATIO_LOW": "lr",
    "UPDATE_RATIO_HIGH": "lr",
    "OVERFITTING": "training",
    "UNDERFITTING": "training",
    "NAN_LOSS": "training",
    "CHECK_FAILED": None,
    "CHECK_SKIPPED": None,
}
# The checkup's step names (CHECK_FAILED's evidence["step"]) by row.
_ROW_OF_STEP = {
    "data audit": "data",
    "architecture audit": "architecture",
    "init audit": "init",
    "initial loss": "initial_loss",
    "overfit tiny subset": "overfit",
    "learnable labels": "learnable",
    "regularization": "regularization",
    "lr range test": "lr",
    "learning rate": "lr",
    "training run": "training",
}


def row_of(finding: Finding) -> str | None:
    """The "what was checked" row that shows `finding` (None: no row)."""
    rows = {step for step, _, _ in _CHECK_ROWS}
    check = finding.evidence.get("check") if isinstance(finding.evidence, dict) else None
    if check in rows:
        return check
    if finding.code == "CHECK_FAILED":
        return _ROW_OF_STEP.get(str(finding.evidence.get("step")))
    return _STEP_OF_CODE.get(finding.code)
