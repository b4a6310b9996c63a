#!/usr/bin/env bash
# Install LangGraph Server for tests/graph/test_langgraph_server.py (run before pytest in CI):
# langgraph-cli[inmem] as tests/graph/requirements-lgserver.txt pins it, and this project (editable),
# into their own virtual environment, .venv-lgserver (langgraph-api pins packages, protobuf<7 among
# them, that the project's environment must not be downgraded to).
# Idempotent: nothing is done when the requirements and pyproject.toml have not changed since the last install.
# Needs python3 >= 3.11 (set PYTHON to choose another interpreter, e.g. a 3.12 to check the server there).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/graph/requirements-lgserver.txt
venv=.venv-lgserver
python=${PYTHON:-python3}

stamp=$venv/.lgserver-setup-stamp
if cat "$requirements" pyproject.toml | cmp -s - "$stamp"; then
    echo "lgserver-setup: $venv is up to date"
else
    if [ ! -x "$venv/bin/python" ]; then
        echo "lgserver-setup: creating $venv with $("$python" --version)"
        "$python" -m venv "$venv"
    fi
    echo "lgserver-setup: pip install -r $requirements -e . into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" -e .
    cat "$requirements" pyproject.toml > "$stamp"
fi

echo "lgserver-setup: done: $("$venv/bin/python" --version), $("$venv/bin/python" -c 'from importlib.metadata import version as v; print("langgraph-cli", v("langgraph-cli"), "langgraph-api", v("langgraph-api"), "langgraph", v("langgraph"))')"
