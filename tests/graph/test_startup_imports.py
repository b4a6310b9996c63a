"""Start-up imports only what a command needs: help needs no graph, a stdio tool server no HTTP stack.

Each check runs in a fresh interpreter (an import is once per process) and reads ``sys.modules``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY_FOR_HELP = ("langgraph", "langchain_core", "mcp", "httpx", "numpy", "torch", "diffusers", "visioncreator.evals")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], []])
def test_cli_help_imports_no_graph_library(argv: list[str]) -> None:
    code = (
        "import contextlib, io\nfrom visioncreator.graph.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass"
    )
    assert heavy(loaded_after(code), HEAVY_FOR_HELP) == []


def test_stdio_tool_server_imports_no_http_stack_detectors_or_torch(tmp_path: object) -> None:
    code = (
        "from visioncreator.tool_servers.cli import _parser, _settings\n"
        "from visioncreator.tool_servers.server import build_server\n"
        "from visioncreator.tool_servers.tools import default_backend\n"
        f"settings = _settings(_parser().parse_args(['--store', {str(tmp_path)!r}]))\n"
        "build_server(settings, backend=default_backend(settings))"
    )
    names = ("visioncreator.tool_servers.http", "visioncreator.tool_servers.detectors.inspect", "torch")
    assert heavy(loaded_after(code), (*names, "diffusers", "visioncreator.graph", "langgraph")) == []


@pytest.mark.parametrize(
    "face",
    [
        "visioncreator.graph",
        "visioncreator.policy",
        "visioncreator.tool_servers",
        "visioncreator.tool_servers.detectors",
        "visioncreator.tool_servers.diffusion",
    ],
)
def test_every_name_of_a_lazy_face_resolves(face: str) -> None:
    module = importlib.import_module(face)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []
    with pytest.raises(AttributeError):
        _ = module.no_such_name
