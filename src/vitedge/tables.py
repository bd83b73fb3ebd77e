"""One table type for every table vitedge shows or writes: the terminal (rich), Markdown, HTML and
CSV render the same title, header, rows and note."""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Table"]


@dataclass
class Table:
    """``rows`` hold the cells as shown (the caller formats numbers; ``None`` is an empty cell).
    ``align`` is one letter per column, ``l`` or ``r``; by default the first column is
    left-aligned, the rest right-aligned (numbers)."""

    title: str
    head: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    align: str = ""

    def __post_init__(self) -> None:
        self.head = [str(h) for h in self.head]
        self.rows = [[_cell(c) for c in row] for row in self.rows]
        if not self.align:
            self.align = "l" + "r" * (len(self.head) - 1)
        if len(self.align) != len(self.head) or set(self.align) - {"l", "r"}:
            raise ValueError(f"align needs one of l/r per column ({len(self.head)}), got {self.align!r}")
        for row in self.rows:
            if len(row) != len(self.head):
                raise ValueError(f"a row of {len(row)} cells in a table of {len(self.head)} columns: {row}")

    @classmethod
    def of_mapping(cls, title: str, head: tuple[str, str], values: dict[str, Any], digits: int = 2) -> Table:
        """A two-column table of ``values`` (numbers shown with ``digits`` decimals)."""
        return cls(title, list(head), [[key, f"{value:.{digits}f}" if isinstance(value, float) else value]
                                       for key, value in values.items()])

    def add_row(self, *cells: Any) -> None:
        row = [_cell(c) for c in cells]
        if len(row) != len(self.head):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(self.head)} columns: {row}")
        self.rows.append(row)

    def markdown(self, heading: str = "###") -> str:
        """GitHub Markdown: the title as a heading (``heading=""``: none), the table, the note."""
        lines = [f"{heading} {self.title}", ""] if heading and self.title else []
        lines += ["| " + " | ".join(_md(h) for h in self.head) + " |",
                  "|" + "|".join("---" if a == "l" else "---:" for a in self.align) + "|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.head)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        note = f"<p><small>{inline_html(self.note)}</small></p>" if self.note else ""
        title = f"<h3>{html.escape(self.title)}</h3>" if self.title else ""
        return f"{title}<table><tr>{head}</tr>{rows}</table>{note}"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.head)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def rich(self) -> Any:
        """A ``rich.table.Table`` for the terminal (rich is imported only here)."""
        from rich import box
        from rich.table import Table as RichTable

        table = RichTable(title=self.title or None, box=box.SIMPLE_HEAD, caption=self.note or None)
        for column, align in zip(self.head, self.align):
            # headers wrap between words, never inside one (the table must fit 80 columns)
            table.add_column(column, justify="left" if align == "l" else "right", no_wrap=align == "l",
                             min_width=None if align == "l" else max(5, *(len(w) for w in column.split())))
        for row in self.rows:
            table.add_row(*row)
        return table


def inline_html(text: str) -> str:
    """The Markdown vitedge's sentences use, in HTML: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)  # an empty cell, as csv writes None


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")

