"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file
(images embedded as base64, no external CSS or scripts) from the same content."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from vitedge.tables import Table, inline_html

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
                out += value.markdown().split("\n")
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
                body.append(f"<p>{inline_html(str(value))}</p>")
            elif kind == "table":
                body.append(value.html())
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
