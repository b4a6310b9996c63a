"""The wheel bundle a lent GPU machine needs to run the project: everything its image lacks, ≤ 64 MiB.

The GPU image (``KINDS.md`` of the device tool, read 2026-11-17) has Python 3.12, torch, transformers,
accelerate, numpy, pillow, httpx and anyio, but not diffusers, langgraph, mcp or pydantic, and it
reaches no package index. This script, run where pip reaches PyPI, walks the dependency closure of
this project's runtime and ``diffusers`` extra as installed in the current environment (same
versions as here), leaves out what the image already holds, downloads the rest as CPython 3.12
manylinux wheels (``pip download --no-deps``), builds the project's own wheel, and prints every
wheel, the total, and what travels with the working tree (tracked files too) against the limit.

It also writes ``on-image.txt``: the requirements our packages place on packages the image is
trusted to hold (``name specifier`` per line), which the GPU side checks before it runs.

Usage (from the repository root, with the project's venv): python benchmarks/gpu_wheels.py [--dest build/gpu-wheels]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / "build" / "gpu-wheels"
LIMIT_BYTES = 64 * 2**20
"""What one device call may carry: the working tree and the carried wheels together."""
EXTRAS = ("diffusers",)
"""The project's extras the GPU run needs besides its runtime dependencies (``--extras`` picks others)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
"""The GPU image's interpreter, for evaluating environment markers."""

# The 'cuda' image's packages (device tool's KINDS.md, "Python packages already there", 2026-11-17).
_IMAGE_NAMES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
    charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize
    huggingface-hub hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
    markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
    multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
    nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
    optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
    pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
    six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
    tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
    wheel wrapt xarray xxhash yarl zipp"""
ALSO_BUNDLED = frozenset(("anyio", "certifi", "h11", "httpcore", "httpx", "idna", "typing-extensions"))
"""Image packages bundled anyway: small pure-Python ones our packages want recent versions of. They cost
< 1 MiB and remove the risk that the image's copy is older than, say, pydantic's ``typing-extensions>=4.14``."""
ON_IMAGE = frozenset(_IMAGE_NAMES.split()) - ALSO_BUNDLED
"""What the bundle leaves out."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: tuple[str, ...] = EXTRAS) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(text) for text in names]


def applies(requirement: Requirement, extras: frozenset[str] = frozenset()) -> bool:
    """Whether ``requirement`` holds on the GPU image, for a dependent that asked for ``extras``."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": extra}) for extra in {"", *extras})


def closure(roots: list[Requirement]) -> tuple[dict[str, str], list[str]]:
    """Packages to bundle (name -> installed version) and the requirements that fall on the image."""
    bundle: dict[str, str] = {}
    on_image: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [req for req in roots if applies(req)]
    while queue:
        requirement = queue.pop()
        name, extras = canonical(requirement.name), frozenset(requirement.extras)
        if name in ON_IMAGE:
            on_image.add(f"{name} {requirement.specifier}".strip())
            continue
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} (needed: {requirement}) is not installed here: install it first") from None
        bundle[name] = dist.version
        queue += [child for child in map(Requirement, dist.requires or []) if applies(child, extras)]
    return bundle, sorted(on_image)


def pip(*args: str) -> bool:
    """Run pip quietly; print its output only when it fails (a site pip.conf may add noisy find-links)."""
    done = subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        print(done.stdout + done.stderr)
    return done.returncode == 0


def download(pins: dict[str, str], dest: Path) -> None:
    options = [
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "-d",
        str(dest),
    ]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    wanted = [f"{name}=={version}" for name, version in sorted(pins.items())]
    if pip("download", *options, *wanted):
        return
    for pin in wanted:  # find the one(s) with no CPython 3.12 wheel: pure-Python sdists get built here
        if not pip("download", *options, pin):
            print(f"  {pin}: no CPython 3.12 wheel on the index; building one")
            if not pip("wheel", "--no-deps", "-w", str(dest), pin):
                raise SystemExit(f"cannot get a wheel of {pin}")


def project_wheel(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="vc-wheel-") as scratch:
        if not pip("wheel", "--no-deps", "-w", scratch, str(ROOT)):
            raise SystemExit("cannot build the project's wheel")
        for wheel in Path(scratch).glob("*.whl"):
            shutil.move(str(wheel), dest / wheel.name)


def tree_bytes() -> int:
    """Bytes of what travels besides carried paths: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout  # fmt: skip
    paths = (ROOT / p.decode() for p in listed.split(b"\0") if p)
    return sum(path.stat().st_size for path in paths if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="wheel folder (emptied of wheels first)")
    parser.add_argument("--extras", default=",".join(EXTRAS), help="the project's extras to bundle, comma-separated")
    args = parser.parse_args()
    dest: Path = args.dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins, on_image = closure(project_requirements(tuple(e for e in args.extras.split(",") if e)))
    pins.pop("visioncreator", None)
    print(f"bundling {len(pins)} packages the GPU image lacks, plus the project's wheel, into {dest}")
    download(pins, dest)
    project_wheel(dest)
    (dest / "on-image.txt").write_text("\n".join(on_image) + "\n")
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    tree = tree_bytes()
    print(f"wheels: {len(wheels)} files, {total / 2**20:.2f} MiB")
    print(f"travels: working tree {tree / 2**20:.2f} MiB + wheels = {(tree + total) / 2**20:.2f} MiB "
          f"(limit {LIMIT_BYTES / 2**20:.0f} MiB)")  # fmt: skip
    print(f"requirements on the image's own packages (checked there): {', '.join(on_image)}")
    if tree + total > LIMIT_BYTES:
        raise SystemExit("over the device call's limit: bundle less")


if __name__ == "__main__":
    main()
