"""The core install: importing the packages pulls in no heavy extra."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "diffusers", "transformers", "trl", "ray", "vllm", "datasets", "peft", "accelerate"]


def test_core_imports_pull_in_no_heavy_extra() -> None:
    code = (
        "import sys, json\n"
        "import visioncreator.graph, visioncreator.policy, visioncreator.tool_servers, visioncreator.rl, "
        "visioncreator.evals\n"
        "import visioncreator.graph.cli, visioncreator.graph.offline, visioncreator.tool_servers.server\n"
        "import visioncreator.tool_servers.synthetic.backend, visioncreator.evals.suite\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_namespace_packages_resolve_from_their_folders() -> None:
    import visioncreator.evals
    import visioncreator.graph
    import visioncreator.policy
    import visioncreator.rl
    import visioncreator.tool_servers

    folders = {m.__name__.rsplit(".", 1)[1]: m.__file__ for m in (
        visioncreator.graph, visioncreator.policy, visioncreator.tool_servers, visioncreator.rl, visioncreator.evals
    )}  # fmt: skip
    for name, path in folders.items():
        assert path is not None
        assert f"/{name}/visioncreator/{name}/__init__.py" in path
    import visioncreator

    assert not hasattr(visioncreator, "__file__") or visioncreator.__file__ is None
