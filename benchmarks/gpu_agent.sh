#!/usr/bin/env bash
# The GPU benchmark of the whole agent (benchmarks/gpu_agent.py), in one command.
#
# Here, where pip reaches PyPI, build the wheel bundle the GPU image lacks (prints every wheel, the
# total and what travels against the 64 MiB limit):
#
#     bash benchmarks/gpu_agent.sh bundle            # or --dry-run; writes build/gpu-wheels/
#
# On a lent GPU machine, through the device tool's `run` with carry ["build/gpu-wheels"] and
# timeout_s 570 (a full run takes about 5 of its 10 minutes):
#
#     set -o pipefail; bash benchmarks/gpu_agent.sh 2>&1 | tee $OUT/gpu_agent.log
#
# On a CPU, the same flow with the tiny pipelines (a few minutes):
#
#     PYTHON=.venv/bin/python bash benchmarks/gpu_agent.sh --device cpu --size tiny
#
# Any other arguments go to gpu_agent.py (--help lists them). When the chosen Python ($PYTHON, else
# python3) lacks the project's dependencies, the bundle is installed with pip --no-index into
# /tmp/vc-gpu-site and put on PYTHONPATH, after the working tree's source folders: the code that
# travelled is the code that runs, the project's wheel adds its metadata and entry points.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=build/gpu-wheels

if [ "${1:-}" = "bundle" ] || [ "${1:-}" = "--dry-run" ]; then
    exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu_wheels.py --dest "$wheels"
fi

py="${PYTHON:-python3}"
need="import diffusers, langgraph.graph, mcp, pydantic, langgraph.checkpoint.sqlite.aio"
if ! "$py" -c "$need" >/dev/null 2>&1; then
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "$py cannot import the project's dependencies and $wheels holds no wheels:" >&2
        echo "run 'bash benchmarks/gpu_agent.sh bundle' where pip works, and carry $wheels" >&2
        exit 2
    fi
    site=/tmp/vc-gpu-site
    started=$(date +%s)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target "$site" "$wheels"/*.whl
    echo "installed $(ls "$wheels"/*.whl | wc -l) wheels into $site in $(( $(date +%s) - started )) s"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/graph:$PWD/policy:$PWD/tool_servers:$PWD/rl:$PWD/evals${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# -P: benchmarks/ is not put first on sys.path implicitly (gpu_agent.py adds it itself, after the stdlib).
exec "$py" -P benchmarks/gpu_agent.py --wheels "$wheels" "$@"
