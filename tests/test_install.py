"""A plain install (``pip install vitedge``, no extras) must work: everything imported when a
module loads is a declared dependency, and the CLI starts without the test-only packages."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vitedge"

# Present in the test venv (the test extra, or pulled in by it) but not in a plain install.
NOT_INSTALLED_BY_DEFAULT = ("click", "timm", "openvino", "hypothesis", "nncf", "torchvision", "tensorrt")

# Import names whose distribution is named otherwise, for modules that may be absent here.
DISTRIBUTION_OF = {"PIL": "pillow", "yaml": "pyyaml"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalize(re.match(r"[A-Za-z0-9._-]+", req).group()) for req in project["dependencies"]}


def _guards_import_error(node: ast.Try) -> bool:
    caught = set()
    for handler in node.handlers:
        if handler.type is None:
            return True
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        caught |= {n.id for n in names if isinstance(n, ast.Name)}
    return bool(caught & {"ImportError", "ModuleNotFoundError", "Exception"})


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_modules(body: list[ast.stmt]) -> list[tuple[str, int]]:
    """Top-level names of the absolute imports that run when the module (or a class body in it)
    executes: not inside functions, ``if TYPE_CHECKING:`` or a ``try`` that catches ImportError."""
    found = []
    for node in body:
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.ClassDef):
            found += import_time_modules(node.body)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += import_time_modules(node.body)
            found += import_time_modules(node.orelse)
        elif isinstance(node, ast.Try):
            if not _guards_import_error(node):
                found += import_time_modules(node.body)
            found += import_time_modules(node.orelse) + import_time_modules(node.finalbody)
            for handler in node.handlers:
                found += import_time_modules(handler.body)
        elif isinstance(node, ast.With):
            found += import_time_modules(node.body)
    return found


def test_the_scanner_sees_what_runs_at_import():
    tree = ast.parse(textwrap.dedent("""
        import os, timm.models
        from PIL import Image
        from . import sibling
        if TYPE_CHECKING:
            import hypothesis
        try:
            import openvino
        except ImportError:
            openvino = None
        class A:
            import yaml
        def f():
            import tensorrt
    """))
    assert [name for name, _ in import_time_modules(tree.body)] == ["os", "timm", "PIL", "yaml"]


def test_module_level_imports_are_declared_dependencies():
    declared = declared_dependencies()
    assert {"torch", "typer", "pillow", "pyyaml"} <= declared  # the parsing itself
    installed = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted(SRC.rglob("*.py")):
        for name, line in import_time_modules(ast.parse(path.read_text(), str(path)).body):
            if name in sys.stdlib_module_names or name in ("vitedge", "__future__"):
                continue
            dists = {_normalize(d) for d in installed.get(name, [])}
            dists |= {_normalize(DISTRIBUTION_OF.get(name, name))}
            if not dists & declared:
                undeclared.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not undeclared, ("imported at module level but not in [project].dependencies (move the "
                            "import into the function that needs it, or declare it):\n"
                            + "\n".join(undeclared))


BLOCKER = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    BLOCKED = set({blocked!r})

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def test_cli_help_without_the_extras(tmp_path):
    """``vitedge --help`` (the installed console script) with click and every test-only package
    made unimportable, as after ``pip install vitedge``."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=NOT_INSTALLED_BY_DEFAULT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                                      os.environ.get("PYTHONPATH")]))}
    script = Path(sys.executable).with_name("vitedge")
    assert script.is_file(), f"{script} is missing: install the package (pip install -e .)"
    probe = subprocess.run([sys.executable, "-c", "import click"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert "blocked by the test" in probe.stderr, "the blocker is not active in the subprocess"
    proc = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: vitedge" in proc.stdout and "bench" in proc.stdout


def test_the_venv_holds_exactly_the_locked_versions():
    """What CI tested is what a fresh machine gets: `pip freeze` of the venv equals constraints.txt
    (refresh both with `make lock` after a deliberate upgrade)."""
    locked = {line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    installed = {line.strip() for line in frozen.splitlines() if line.strip() and not line.startswith("#")}
    assert installed - locked == set() and locked - installed == set(), (
        f"not locked: {sorted(installed - locked)}; locked but not installed: {sorted(locked - installed)}")
