#!/usr/bin/env bash
# Make the shared environment a LangGraph app has when it loads MCP tools through LangChain's
# adapters: this project (editable, no extras) on mcp 1.x beside langchain-mcp-adapters, which
# needs mcp<2, in .venv-proj-mcp1, as tests/interop/requirements-proj-mcp1.txt pins them. CI then
# runs the tests .ci/mcp1-tests.txt lists with that interpreter (see .ci/run).
# Idempotent: nothing is installed when neither the pins nor pyproject.toml changed since the last
# successful install. Needs python3 >= 3.11 (set PYTHON to choose another interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-proj-mcp1
pins=tests/interop/requirements-proj-mcp1.txt
python=${PYTHON:-python3}

# The stamp is the pins and the project's own dependencies as they were at the last good install.
stamp=$venv/.mcp1-setup-stamp
wanted=$(cat "$pins" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    echo "mcp1-setup: $venv is up to date"
else
    if [ ! -x "$venv/bin/python" ]; then
        echo "mcp1-setup: creating $venv with $("$python" --version)"
        "$python" -m venv "$venv"
    fi
    echo "mcp1-setup: pip install -e . -r $pins into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . -r "$pins"
    echo "$wanted" > "$stamp"
fi

"$venv/bin/python" - <<'PY'
from importlib.metadata import version as v

import langchain_mcp_adapters  # noqa: F401 - the point: it imports beside the project
import visioncreator.graph  # noqa: F401
import visioncreator.tool_servers  # noqa: F401

assert v("mcp").startswith("1."), v("mcp")
print("mcp1-setup: done: mcp", v("mcp"), "langchain-mcp-adapters", v("langchain-mcp-adapters"), "visioncreator", v("visioncreator"))
PY
