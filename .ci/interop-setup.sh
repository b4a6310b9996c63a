#!/usr/bin/env bash
# Install the MCP clients we did not write, for tests/interop/ (run before pytest in CI):
#   - the official TypeScript SDK (@modelcontextprotocol/sdk) into tests/interop/node_modules,
#     exactly as tests/interop/package-lock.json pins it (npm ci);
#   - mcp 1.x and langchain-mcp-adapters into their own virtual environment, .venv-mcp1, exactly
#     as tests/interop/requirements-mcp1.txt pins them (they need mcp<2; the project needs mcp>=2).
# Idempotent: a part whose lock file has not changed since its last install is left as it is.
# Needs node >= 20 with npm, and python3 >= 3.10 (set PYTHON to choose another interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

interop=tests/interop
venv=.venv-mcp1
python=${PYTHON:-python3}

# A stamp is a copy of the lock file taken after a successful install: equal means up to date.
node_stamp=$interop/node_modules/.interop-setup-stamp
if cmp -s "$interop/package-lock.json" "$node_stamp"; then
    echo "interop-setup: $interop/node_modules is up to date"
else
    echo "interop-setup: npm ci in $interop (node $(node --version), npm $(npm --version))"
    (cd "$interop" && npm ci --no-audit --no-fund)
    cp "$interop/package-lock.json" "$node_stamp"
fi

venv_stamp=$venv/.interop-setup-stamp
if cmp -s "$interop/requirements-mcp1.txt" "$venv_stamp"; then
    echo "interop-setup: $venv is up to date"
else
    if [ ! -x "$venv/bin/python" ]; then
        echo "interop-setup: creating $venv with $("$python" --version)"
        "$python" -m venv "$venv"
    fi
    echo "interop-setup: pip install -r $interop/requirements-mcp1.txt into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$interop/requirements-mcp1.txt"
    cp "$interop/requirements-mcp1.txt" "$venv_stamp"
fi

echo "interop-setup: done: $("$venv/bin/python" -c 'from importlib.metadata import version as v; print("mcp", v("mcp"), "langchain-mcp-adapters", v("langchain-mcp-adapters"))'), @modelcontextprotocol/sdk $(node -p "require('./$interop/node_modules/@modelcontextprotocol/sdk/package.json').version")"
