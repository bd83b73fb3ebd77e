"""The architecture, enforced: the layer contract of pyproject.toml holds (import-linter), no two
vitedge modules import each other even indirectly, and vitedge imports vitedge at module top."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PYPROJECT = SRC.parent / "pyproject.toml"
# The CLI imports each command's dependencies when the command runs, so `vitedge --help` stays quick.
LAZY_IMPORTS_ALLOWED = "vitedge/cli/"


def lint_imports(src: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with this repo's contracts on the vitedge package found under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    lint = Path(sys.executable).with_name("lint-imports")  # installed beside this python
    return subprocess.run([str(lint), "--config", str(PYPROJECT), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module → the vitedge modules it imports (anywhere in the file), as grimp reads the package
    under ``src``: in a fresh process, since this one has imported the real vitedge already."""
    code = ("import json, grimp; g = grimp.build_graph('vitedge', cache_dir=None); "
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=300).stdout
    return {module: set(imported) for module, imported in json.loads(out).items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a cycle or a knot of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def _copy(tmp_path: Path) -> Path:
    """A copy of src/vitedge to break on purpose."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "vitedge", copy / "vitedge", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_every_layer_imports_only_the_layers_below_it(tmp_path):
    result = lint_imports(SRC, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    broken = _copy(tmp_path)
    layers = broken / "vitedge" / "models" / "layers.py"
    layers.write_text(layers.read_text() + "\nfrom vitedge.report import write_report  # noqa\n")
    result = lint_imports(broken, tmp_path)
    assert result.returncode != 0
    assert "vitedge.models is not allowed to import vitedge.report" in result.stdout


def test_no_module_imports_itself_through_others():
    assert import_cycles(import_graph(SRC)) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    broken = _copy(tmp_path)
    batching = broken / "vitedge" / "deploy" / "batching.py"  # runtimes imports it
    batching.write_text(batching.read_text() + "\nfrom vitedge.deploy import runtimes  # noqa\n")
    cycles = import_cycles(import_graph(broken))
    both = {"vitedge.deploy.batching", "vitedge.deploy.runtimes"}
    assert any(both <= set(cycle) for cycle in cycles), cycles


@pytest.mark.parametrize("path", sorted(str(p.relative_to(SRC)) for p in (SRC / "vitedge").rglob("*.py")))
def test_vitedge_modules_import_vitedge_at_module_top(path):
    if path.startswith(LAZY_IMPORTS_ALLOWED):
        pytest.skip("the CLI imports per command")
    tree = ast.parse((SRC / path).read_text())
    inner = [f"line {node.lineno}: {node.module}" for fn in ast.walk(tree)
             if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn)
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vitedge")]
    assert inner == [], f"{path} imports vitedge inside functions (a hidden cycle or upward import?): {inner}"
