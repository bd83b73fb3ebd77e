"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file
(images embedded as base64, no external CSS or scripts) from the same content."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitedge.report.tables import Table

__all__ = ["Document"]


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def pairs(self, values: dict[str, str]) -> None:
        self.blocks.append(("pairs", values))

    def markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [str(value), ""]
            elif kind == "table":
                out += _markdown_table(value)
            elif kind == "img":
                path, caption = value
                out += [f"![{caption}]({path.relative_to(base).as_posix()})", ""]
            elif kind == "pairs":
                out += [f"- {k}: {v}" for k, v in value.items()] + [""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(str(value))}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline(str(value))}</p>")
            elif kind == "table":
                body.append(_html_table(value))
            elif kind == "img":
                path, caption = value
                data = base64.b64encode(Path(path).read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            elif kind == "pairs":
                items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in value.items())
                body.append(f"<ul>{items}</ul>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}figcaption{font-size:.85rem;color:#555}code{background:#f3f3f3;padding:0 .2rem}")


def _markdown_table(table: Table) -> list[str]:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.head))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return lines + ([""] + [table.note] if table.note else []) + [""]


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    note = f"<p><small>{_inline(table.note)}</small></p>" if table.note else ""
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{rows}</table>{note}"


def _inline(text: str) -> str:
    """The Markdown the report's sentences use: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def csv_lines(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(head)
    writer.writerows(rows)
    return buffer.getvalue()
