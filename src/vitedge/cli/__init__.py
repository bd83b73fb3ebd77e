"""The ``vitedge`` command: a thin layer over the Python API.

Every user mistake surfaces as a :class:`VitedgeError`, printed as one line on stderr with a
non-zero exit; nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import sys

import typer

from vitedge.cli import render
from vitedge.cli.commands import EXIT_USER_ERROR, PROG, app
from vitedge.errors import VitedgeError

__all__ = ["EXIT_USER_ERROR", "app", "main"]


def main() -> None:
    """Console-script entry point: one-line errors and a non-zero exit for user mistakes."""
    try:
        code = app(prog_name=PROG, standalone_mode=False)
    except VitedgeError as err:
        render.error(str(err))
        sys.exit(EXIT_USER_ERROR)
    except typer.TyperException as err:
        # The parser's errors: typer vendors click, so they are not click's classes (and click is
        # not a dependency); usage errors carry exit code 2, anything else its own.
        render.error(f"{err.format_message().rstrip('.')} — see {_command_path(err)} --help")
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(130)
    # Not standalone, typer returns the code of a typer.Exit (--help: 0, Ctrl-C: 130).
    if isinstance(code, int) and code:
        sys.exit(code)


def _command_path(err: Exception) -> str:
    """``vitedge CMD`` for the command the bad arguments were given to (``vitedge`` if none)."""
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        return ctx.command_path
    # Some parser errors (an option missing its value) carry no context: read the command line.
    commands = {info.name for info in app.registered_commands}
    verb = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    return f"{PROG} {verb}" if verb in commands else PROG
