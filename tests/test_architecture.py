"""The architecture of docs/architecture.md, checked: layers, faces, no cycles, parse once, small modules.

The layer and face rules themselves are import-linter contracts in pyproject.toml (``lint-imports``,
also run by CI); this module runs them, and checks what import-linter does not: that no module and
no package imports itself back through a cycle (grimp, import-linter's engine), that each face's
``__all__`` changes only on purpose (a snapshot), that downstream code reads parsed values instead
of parsing turn text again, and the size limits.

A deliberate change of a face: ``VISIONCREATOR_UPDATE_SNAPSHOTS=1 pytest tests/test_architecture.py``,
then review the diff of ``snapshots/faces.json`` like code.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policy", "tool_servers", "graph", "evals", "rl")
FACES = (
    "visioncreator.policy",
    "visioncreator.tool_servers",
    "visioncreator.tool_servers.synthetic",
    "visioncreator.graph",
    "visioncreator.evals",
    "visioncreator.rl",
)
SNAPSHOT = Path(__file__).parent / "snapshots" / "faces.json"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package / "visioncreator" / package).rglob("*.py"))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*(f"visioncreator.{p}" for p in PACKAGES), cache_dir=None)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in graph.modules}
    assert _cycles(edges) == []


def test_no_package_imports_itself_back(graph: grimp.ImportGraph) -> None:
    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module) & graph.modules:
            if top(imported) != top(module):
                edges.setdefault(top(module), set()).add(top(imported))
    assert _cycles(edges) == []
    assert "visioncreator.evals" not in edges.get("visioncreator.graph", set())
    assert "visioncreator.rl" not in edges.get("visioncreator.graph", set())


def test_the_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"  # import-linter's console script, beside python
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _faces() -> dict[str, list[str]]:
    return {face: sorted(importlib.import_module(face).__all__) for face in FACES}


def test_every_public_name_is_there() -> None:
    for face, names in _faces().items():
        module = importlib.import_module(face)
        missing = [name for name in names if not hasattr(module, name)]
        assert not missing, f"{face} lists names it does not have: {missing}"


def test_the_faces_match_the_snapshot() -> None:
    current = json.dumps(_faces(), indent=1, sort_keys=True) + "\n"
    if os.environ.get("VISIONCREATOR_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert current == SNAPSHOT.read_text(encoding="utf-8"), (
        "a package's __all__ changed: if on purpose, regenerate with VISIONCREATOR_UPDATE_SNAPSHOTS=1"
    )


def _names_parse_turn(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        (isinstance(node, ast.Name) and node.id == "parse_turn")
        or (isinstance(node, ast.alias) and node.name == "parse_turn")
        or (isinstance(node, ast.Attribute) and node.attr == "parse_turn")
        for node in ast.walk(tree)
    )


def test_downstream_code_reads_parsed_values_and_never_parses_turn_text() -> None:
    # The graph parses nothing itself (policies return parsed turns); reading a version-1 record,
    # which kept no values, is the one place a record's text is parsed.
    allowed = {ROOT / "graph" / "visioncreator" / "graph" / "trajectory.py"}
    readers = [p for p in _sources() if p.parts[len(ROOT.parts)] in ("graph", "evals", "rl")]
    assert readers
    offending = [str(p.relative_to(ROOT)) for p in readers if p not in allowed and _names_parse_turn(p)]
    assert offending == []


def test_modules_and_functions_stay_small() -> None:
    big_modules: list[str] = []
    long_functions: list[str] = []
    for path in _sources():
        source = path.read_text()
        name = str(path.relative_to(ROOT))
        if len(source.splitlines()) > MAX_MODULE_LINES:
            big_modules.append(f"{name} ({len(source.splitlines())} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    assert big_modules == []
    assert long_functions == []
