"""A small report writer: one list of sections rendered both as Markdown and as a self-contained HTML page.

Sections are plain data (a title, paragraphs, tables as rows of cells, images by relative path), so the
demo and the studies describe *what* to show and this module alone decides how it looks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from compscale.io import atomic_write_text


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # paths relative to the report folder
    markdown: str = ""  # a pre-written Markdown fragment (e.g. a study's section.md), shown as-is


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out.append("| " + " | ".join(map(str, t.header)) + " |")
            out.append("|" + "---|" * len(t.header))
            out += ["| " + " | ".join(map(str, r)) + " |" for r in t.rows]
            out.append("")
        for img in s.images:
            out += [f"![{Path(img).stem}]({img})", ""]
        if s.markdown:
            out += [s.markdown.strip(), ""]
    return "\n".join(out)


def _md_fragment_to_html(text: str) -> str:
    """Enough Markdown for study fragments: headings, tables, images, paragraphs."""
    parts, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush_table()
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            level = min(4, len(stripped) - len(stripped.lstrip("#")) + 1)
            parts.append(f"<h{level}>{html.escape(stripped.lstrip('#').strip())}</h{level}>")
        elif stripped.startswith("![") and "](" in stripped:
            src = stripped.split("](", 1)[1].rstrip(")")
            parts.append(f'<img src="{html.escape(src)}" alt="">')
        else:
            parts.append(f"<p>{html.escape(stripped)}</p>")
    flush_table()
    return "\n".join(parts)


def to_html(title: str, sections: Sequence[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in t.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in t.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        body += [f'<img src="{html.escape(img)}" alt="{html.escape(Path(img).stem)}">' for img in s.images]
        if s.markdown:
            body.append(_md_fragment_to_html(s.markdown))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;margin:1em 0}h2{margin-top:2em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(folder: str | Path, title: str, sections: Sequence[Section]) -> tuple[Path, Path]:
    """``folder/index.html`` and ``folder/report.md``, written atomically."""
    folder = Path(folder)
    atomic_write_text(folder / "report.md", to_markdown(title, sections))
    atomic_write_text(folder / "index.html", to_html(title, sections))
    return folder / "index.html", folder / "report.md"
