"""The layering of ARCHITECTURE.md, enforced: contracts that pass, and that fail when broken.

`lint-imports` reads the contracts in pyproject.toml. The second test proves they can fail: it
copies the package, adds one forbidden import (the ingress reaching for the actors) and expects
the checker to refuse it. Import circles and function-local imports of colmena's own modules
(the usual way a circle is hidden) are checked on the import graph and the syntax tree.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "colmena"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "colmena", ignore=shutil.ignore_patterns("__pycache__"))
    errors = tmp_path / "colmena" / "http" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport colmena.actors.payments  # noqa: E402,F401\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "colmena.http is not allowed to import colmena.actors" in result.stdout
    assert "colmena.http.errors -> colmena.actors.payments" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("colmena", cache_dir=None)
    assert _cycles(graph) == []


def test_a_circle_is_seen() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def _local_colmena_imports(tree: ast.Module) -> list[int]:
    """Lines where a function body imports one of colmena's modules."""
    lines = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("colmena")
            ):
                lines.append(node.lineno)
            elif isinstance(node, ast.Import) and any(
                a.name.startswith("colmena") for a in node.names
            ):
                lines.append(node.lineno)
    return lines


def test_no_function_hides_an_import_of_colmena() -> None:
    hidden = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _local_colmena_imports(ast.parse(path.read_text(), str(path))))
    }
    assert hidden == {}


def test_a_hidden_import_is_seen() -> None:
    tree = ast.parse("def f():\n    from colmena import dev\n    return dev\n")
    assert _local_colmena_imports(tree) == [2]
