"""The compare report's content model and its renderings: one self-contained HTML page, and markdown.

:mod:`headstart.experiments.report` computes the numbers once into a :class:`ReportContent`; this module
turns it into one ``report.html`` that opens offline, mailed or copied anywhere: CSS inline, plots
embedded as base64 PNGs, no script, font or URL fetched from outside. ``summary.md`` is rendered
from the same content, so both files always show the same numbers. Every piece of text goes through
:func:`html.escape`, since strategy names, run names and notes come from users.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Cell",
    "Image",
    "Link",
    "Page",
    "ReportContent",
    "Table",
    "fmt",
    "fmt_count",
    "fmt_p",
    "fmt_signed",
    "render_html",
    "render_markdown",
    "render_page_html",
    "render_page_markdown",
]


@dataclass(frozen=True)
class Link:
    """A relative link: ``href`` is already URL-quoted, ``text`` is plain text."""

    text: str
    href: str


Cell = str | Link | tuple[str | Link, ...]
"""A table cell: text, a link, or several of them shown side by side."""


@dataclass
class Table:
    """A table as rendered in both summary.md and report.html, so the two always show the same numbers."""

    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    numeric: frozenset[int] = frozenset()  # column indices shown right-aligned
    row_classes: list[str] = field(default_factory=list)  # one CSS class per row ('' for none)


@dataclass(frozen=True)
class Image:
    """A plot written beside the report: ``path`` absolute, ``rel`` relative to the report's directory."""

    path: Path
    rel: str
    alt: str
    caption: str


@dataclass
class ReportContent:
    """Everything the report says, already formatted as text."""

    title: str
    created: str
    intro: list[str]
    warnings: list[str]
    summary: Table
    paired_heading: str
    paired: Table
    paired_notes: list[str]
    findings: list[str]
    notes: list[str]
    runs: Table
    images: list[Image]
    classic: list[str] = field(default_factory=list)  # the classic baseline's verdict and settings


@dataclass
class Page:
    """A report of other commands (tune): a title, paragraphs, warnings and sections of text, tables and plots,
    in the compare report's look."""

    title: str
    created: str
    intro: list[str]
    warnings: list[str]
    sections: list[tuple[str, list[str | Table | Image]]]  # (heading, items in order)


_CSS = """
:root { color-scheme: light dark; --fg: #1d1f23; --bg: #ffffff; --muted: #5f6670; --line: #d9dde3;
  --head: #f3f5f8; --accent: #2f6fb5; --warn-bg: #fff6e0; --warn-line: #e0a800; --bad: #b42318; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e8eb; --bg: #16181c; --muted: #a0a7b1; --line: #3a3f47; --head: #22262c;
    --accent: #7fb0ea; --warn-bg: #3a3017; --warn-line: #c99700; --bad: #f28b82; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.meta, .note, figcaption { color: var(--muted); }
.warn { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 8px 12px;
  margin: 12px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--head); }
td.num { text-align: right; white-space: nowrap; }
tr.baseline td { font-weight: 600; }
tr.classic td { font-style: italic; border-top: 2px solid var(--line); }
tr.failed td { color: var(--bad); }
a { color: var(--accent); }
.links a + a { margin-left: 8px; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
li { margin: 4px 0; }
"""


# ----------------------------------------------------------------------------------------------------
# number formatting (shared by both renderings' callers)


def fmt(x: float | None, digits: int = 4) -> str:
    """Fixed-point text for a table cell; "n/a" for None or NaN, "+inf"/"-inf" spelled out."""
    if x is None or not math.isfinite(x):
        return "n/a" if x is None or math.isnan(x) else ("+inf" if x > 0 else "-inf")
    return f"{x:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value with 3 significant digits (what the tests compare against scipy); "n/a" when untestable."""
    return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"


def fmt_signed(x: float | None, digits: int = 2) -> str:
    """Like :func:`fmt` with an explicit sign: differences read as gains or losses."""
    return fmt(x, digits) if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def fmt_count(x: float) -> str:
    """Parameter counts as 1.54k, 14M, 1.1B."""
    if not math.isfinite(x):
        return "n/a"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.0f}"


# ----------------------------------------------------------------------------------------------------
# html


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f'<a href="{_esc(cell.href)}">{_esc(cell.text)}</a>'
    if isinstance(cell, tuple):
        return f'<span class="links">{"".join(_cell(part) for part in cell)}</span>'
    return _esc(cell)


def _table(table: Table, table_id: str, caption: str) -> str:
    head = "".join(f'<th scope="col">{_esc(h)}</th>' for h in table.headers)
    body: list[str] = []
    for i, row in enumerate(table.rows):
        css = table.row_classes[i] if i < len(table.row_classes) else ""
        cells = "".join(
            f'<td class="num">{_cell(c)}</td>' if j in table.numeric else f"<td>{_cell(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f'<tr class="{_esc(css)}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table id="{_esc(table_id)}"><caption class="note">{_esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _items(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in lines) + "</ul>"


def _figure(image: Image) -> str:
    data = base64.b64encode(image.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(image.alt)}">'
        f"<figcaption>{_esc(image.caption)}</figcaption></figure>"
    )


def render_html(content: ReportContent) -> str:
    """The whole report as one self-contained HTML page (inline CSS, embedded PNGs, no script)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(content.title)}</title><style>{_CSS}</style></head>",
        "<body><main>",
        f"<h1>{_esc(content.title)}</h1>",
        f'<p class="meta">Created {_esc(content.created)}</p>',
    ]
    parts += [f"<p>{_esc(line)}</p>" for line in content.intro]
    parts += [f'<div class="warn" role="note">{_esc(line)}</div>' for line in content.warnings]
    parts += ["<section><h2>Strategies</h2>", _table(content.summary, "summary", "mean ± std over seeds")]
    parts.append("</section>")
    if content.classic:
        parts += ['<section><h2>Classic baseline</h2>', *(f"<p>{_esc(line)}</p>" for line in content.classic),
                  "</section>"]
    parts += [f"<section><h2>{_esc(content.paired_heading)}</h2>",
              _table(content.paired, "paired", "differences are strategy minus baseline, seed by seed")]
    parts += [f'<p class="note">{_esc(line)}</p>' for line in content.paired_notes]
    parts.append("</section>")
    if content.findings:
        parts += ["<section><h2>Reading</h2>", _items(content.findings), "</section>"]
    if content.images:
        parts += ["<section><h2>Plots</h2>", *(_figure(image) for image in content.images), "</section>"]
    if content.notes:
        parts += ["<section><h2>Notes</h2>", _items(content.notes), "</section>"]
    parts += ["<section><h2>Runs</h2>", _table(content.runs, "runs", "every run, finished or failed")]
    parts += ["</section>", "</main></body></html>", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# markdown


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f"[{cell.text.replace('[', '(').replace(']', ')')}]({cell.href})".replace("|", "\\|")
    if isinstance(cell, tuple):
        return " ".join(_md_cell(part) for part in cell)
    return cell.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def render_markdown(c: ReportContent) -> str:
    """The report as GitHub-flavoured markdown (summary.md): the same tables and sentences, plots linked."""
    lines = [f"# {c.title}", "", f"Created {c.created}. Full report with plots: [report.html](report.html).", ""]
    lines += [*(f"{line}\n" for line in c.intro), *(f"> **Warning:** {w}\n" for w in c.warnings)]
    lines += ["## Strategies", "", *_md_table(c.summary), ""]
    if c.classic:
        lines += ["## Classic baseline", "", *(f"{line}\n" for line in c.classic)]
    lines += [f"## {c.paired_heading}", ""]
    lines += [*_md_table(c.paired), "", *(f"{n}\n" for n in c.paired_notes)]
    if c.findings:
        lines += ["## Reading", "", *(f"- {f}" for f in c.findings), ""]
    lines += ["## Plots", "", *(f"![{i.alt}]({i.rel})\n" for i in c.images)]
    if c.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in c.notes), ""]
    lines += ["## Runs", "", *_md_table(c.runs), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# generic pages (Page)


def render_page_html(page: Page) -> str:
    """A :class:`Page` as one self-contained HTML file (the compare report's CSS, embedded PNGs, no script)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(page.title)}</title><style>{_CSS}</style></head>", "<body><main>",
             f"<h1>{_esc(page.title)}</h1>", f'<p class="meta">Created {_esc(page.created)}</p>']
    parts += [f"<p>{_esc(line)}</p>" for line in page.intro]
    parts += [f'<div class="warn" role="note">{_esc(line)}</div>' for line in page.warnings]
    for i, (heading, items) in enumerate(page.sections):
        parts.append(f"<section><h2>{_esc(heading)}</h2>")
        for j, item in enumerate(items):
            if isinstance(item, Table):
                parts.append(_table(item, f"t{i}-{j}", ""))
            elif isinstance(item, Image):
                parts.append(_figure(item))
            else:
                parts.append(f'<p class="note">{_esc(item)}</p>')
        parts.append("</section>")
    parts += ["</main></body></html>", ""]
    return "\n".join(parts)


def render_page_markdown(page: Page) -> str:
    """The same :class:`Page` as markdown (plots linked, not embedded)."""
    lines = [f"# {page.title}", "", f"Created {page.created}. Full report with plots: [report.html](report.html).", ""]
    lines += [*(f"{line}\n" for line in page.intro), *(f"> **Warning:** {w}\n" for w in page.warnings)]
    for heading, items in page.sections:
        lines += [f"## {heading}", ""]
        for item in items:
            if isinstance(item, Table):
                lines += [*_md_table(item), ""]
            elif isinstance(item, Image):
                lines.append(f"![{item.alt}]({item.rel})\n")
            else:
                lines.append(f"{item}\n")
    return "\n".join(lines)
