"""How the commands show results on the terminal: tables, lines, and the files they wrote."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from vitedge.tables import Table

console = Console()


def table(t: Table) -> None:
    console.print(t.rich())


def line(text: str, *, wrap: bool = True) -> None:
    """``text`` as it is (no markup); ``wrap=False`` keeps a long line whole for copy and paste."""
    console.print(text, markup=False, highlight=False, soft_wrap=not wrap)


def wrote(path: str | os.PathLike, detail: str = "") -> None:
    line(f"wrote {path}" + (f" ({detail})" if detail else ""))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` and say so."""
    from vitedge.io import write_text as write

    wrote(write(path, text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` and say so."""
    from vitedge.io import write_json as write

    write(path, obj)
    wrote(path)


def error(message: str) -> None:
    """One line on stderr."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
