#!/usr/bin/env bash
# GPU check of the diffusers back end: run from the repository root on a lent GPU machine.
#
#   bash benchmarks/gpu_check.sh [--n 8] [--steps 4] [--model DIR_OR_CACHED_HUB_ID]
#
# Uses whatever Python (3.11+) already has torch and diffusers (set PYTHON to choose one). It installs
# nothing unless VISIONCREATOR_GPU_CHECK_INSTALL=1, and then only into a throwaway venv under
# /tmp that sees the system's packages (so an installed CUDA torch is reused). The project's
# own code runs from the source tree (PYTHONPATH), so no install of visioncreator is needed.
# Model: $VISIONCREATOR_GPU_CHECK_MODEL, else sd-turbo from the Hugging Face cache, else the tiny
# random pipelines. Prints images/s sequential vs batched and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

need="import tomllib, torch, diffusers, transformers, huggingface_hub, pydantic, PIL, anyio, numpy"
pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "$need" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! py=$(pick_python); then
    echo "No Python here can import everything the check needs. What each one lacks:"
    for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
        echo "-- $candidate"
        "$candidate" - <<'PY' || true
import importlib
for name in ("tomllib", "torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "pydantic", "PIL", "anyio", "numpy"):
    try:
        module = importlib.import_module(name)
        print(f"   {name:16} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"   {name:16} MISSING ({type(exc).__name__}: {exc})")
PY
    done
    if [ "${VISIONCREATOR_GPU_CHECK_INSTALL:-0}" = "1" ]; then
        venv=/tmp/visioncreator-gpu-check-venv
        echo "Installing the diffusers extra into $venv (needs a reachable package index)..."
        python3 -m venv --system-site-packages "$venv"
        timeout 900 "$venv/bin/pip" install --disable-pip-version-check -q -e ".[diffusers]"
        py="$venv/bin/python"
    else
        echo "Set VISIONCREATOR_GPU_CHECK_INSTALL=1 to try 'pip install -e .[diffusers]' into a venv under /tmp."
        exit 2
    fi
fi

echo "using $py"
# -P: do not put benchmarks/ first on sys.path (a module there could shadow the standard library).
PYTHONPATH="tool_servers${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -P benchmarks/gpu_check.py "$@"
