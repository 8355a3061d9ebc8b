"""Self-contained HTML pages: figures embedded as PNG data URIs, no external assets.

Shared by the checkup report, the search report and the lab gallery, so that every page
babysit writes looks the same and opens from a file, offline. Figures are built with
`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

__all__ = ["Section", "escape", "figure_png", "image", "new_figure", "page", "table"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 24px; color: #1f2328; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.3em;
     margin-top: 1.8em; }
.subtitle { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 6px 9px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev-error { color: #fff; background: #cf222e; border-radius: 4px; padding: 1px 6px; }
.sev-warning { color: #1f2328; background: #f2cc60; border-radius: 4px; padding: 1px 6px; }
.sev-info { color: #fff; background: #0969da; border-radius: 4px; padding: 1px 6px; }
.pass { color: #fff; background: #1a7f37; border-radius: 4px; padding: 1px 6px; }
.fail { color: #fff; background: #cf222e; border-radius: 4px; padding: 1px 6px; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 0.3em; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
.muted { color: #57606a; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def new_figure(width: float = 8.0, height: float = 4.0) -> Figure:
    """A matplotlib Figure not tied to pyplot (safe in threads and without a display)."""
    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Figures(dict):
    """The page's figures as PNG bytes by file name; `add` embeds one in the page too."""

    def add(self, name: str, fig: Figure | None, alt: str, caption: str) -> str:
        if fig is None:
            return ""
        png = figure_png(fig)
        self[name] = png
        return image(png, alt, caption)


def image(png: bytes, alt: str, caption: str = "") -> str:
    """An <img> with the PNG embedded, and an optional caption."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{cap}</figure>'


def table(header: Sequence[str], rows: Iterable[Sequence[object]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (for cells that carry their own markup)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, int | float) and not isinstance(cell, bool)
            text = str(cell) if raw else escape(cell)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass
class Section:
    """A titled part of a page; `body` is HTML (build it with `table`, `image`, `escape`)."""

    title: str
    body: str = ""
    blocks: list[str] = field(default_factory=list)

    def add(self, block: str) -> Section:
        self.blocks.append(block)
        return self

    def render(self) -> str:
        return f"<section><h2>{escape(self.title)}</h2>{self.body}{''.join(self.blocks)}</section>"


def page(title: str, sections: Iterable[Section], subtitle: str = "") -> str:
    """A whole HTML document."""
    sub = f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else ""
    content = "".join(s.render() for s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1>{sub}{content}</body></html>"
    )
