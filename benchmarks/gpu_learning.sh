#!/usr/bin/env bash
# The learning benchmark on one GPU (benchmarks/gpu_learning.py), in one command, in at most 8 minutes.
#
# Here, where pip reaches PyPI, build the wheels the GPU image lacks (trl, datasets, langgraph, mcp,
# pydantic, ... and this project's wheel: about 20 MiB) and check that they and the working tree fit
# the device call's 64 MiB:
#
#     bash benchmarks/gpu_learning.sh bundle          # writes build/gpu-learning-wheels/
#
# On a lent GPU machine, through the device tool's `run` with carry ["build/gpu-learning-wheels"] and
# timeout_s 570 (the script's own budget is 420 s after the install; figures land in $OUT):
#
#     set -o pipefail; bash benchmarks/gpu_learning.sh 2>&1 | tee $OUT/gpu_learning.log
#
# On a CPU, a dry run of every phase at tiny scale (two or three minutes):
#
#     PYTHON=.venv/bin/python bash benchmarks/gpu_learning.sh --device cpu --tiny
#
# Any other arguments go to gpu_learning.py (--help lists them). When the chosen Python ($PYTHON, else
# python3) cannot import trl, langgraph, mcp and pydantic, the wheels are installed with pip --no-index
# into a venv that sees the image's own packages (torch, transformers, peft, accelerate), or, where
# the image has no venv module (or $PYTHON is a venv itself), into a folder put on PYTHONPATH. The working tree's source folders come
# first on PYTHONPATH: the code that travelled is the code that runs.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=build/gpu-learning-wheels

if [ "${1:-}" = "bundle" ]; then
    exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu_wheels.py --dest "$wheels" --extras rl,evals
fi

py="${PYTHON:-python3}"
need="import trl, datasets, langgraph.graph, mcp, pydantic, peft, accelerate, transformers, torch"
if ! "$py" -c "$need" >/dev/null 2>&1; then
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "$py cannot import the benchmark's dependencies and $wheels holds no wheels:" >&2
        echo "run 'bash benchmarks/gpu_learning.sh bundle' where pip works, and carry $wheels" >&2
        exit 2
    fi
    started=$(date +%s)
    pip_args=(-q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check)
    venv=/tmp/vc-gpu-learning-venv
    # A venv over a venv would not see the inner one's packages: only a base interpreter gets one.
    if "$py" -c "import sys; sys.exit(sys.prefix != sys.base_prefix)" && "$py" -m venv --system-site-packages "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install "${pip_args[@]}" "$wheels"/*.whl
        py="$venv/bin/python"
        echo "installed $(ls "$wheels"/*.whl | wc -l) wheels into the venv $venv in $(( $(date +%s) - started )) s"
    else
        site=/tmp/vc-gpu-learning-site
        "$py" -m pip install "${pip_args[@]}" --upgrade --target "$site" "$wheels"/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "no venv module here: installed $(ls "$wheels"/*.whl | wc -l) wheels into $site in $(( $(date +%s) - started )) s"
    fi
fi
export PYTHONPATH="$PWD/graph:$PWD/policy:$PWD/tool_servers:$PWD/rl:$PWD/evals${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export TOKENIZERS_PARALLELISM=false

# The requirements our packages place on the image's own packages (gpu_wheels.py wrote them): said, not fatal.
if [ -f "$wheels/on-image.txt" ]; then
    "$py" - "$wheels/on-image.txt" <<'PY' || true
import importlib.metadata as md, sys
from packaging.specifiers import SpecifierSet
for line in open(sys.argv[1]).read().splitlines():
    name, _, spec = line.partition(" ")
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        print(f"image check: {name} missing (wanted {spec or 'any'})")
        continue
    if spec and version not in SpecifierSet(spec):
        print(f"image check: {name} {version} does not meet {spec}")
PY
fi
# -P: benchmarks/ is not put first on sys.path implicitly (gpu_learning.py adds it itself, after the stdlib).
exec "$py" -P benchmarks/gpu_learning.py "$@"
