"""GPU check of the diffusers back end: load a small real text-to-image model (or the tiny one), batch.

Picks the model in this order:

1. ``$VISIONCREATOR_GPU_CHECK_MODEL``: a local directory of a saved diffusers pipeline, or a hub id
   already in the local Hugging Face cache;
2. ``stabilityai/sd-turbo`` if it is in the local Hugging Face cache;
3. the ``tiny`` random pipelines (built into a temporary directory).

Then it makes N images one after another (``max_batch = 1``) and N concurrently
(``max_batch = N``) and prints images per second of both and the ratio. Nothing is downloaded.
Run it through ``benchmarks/gpu_check.sh`` on a lent GPU machine, or directly:

    python -P benchmarks/gpu_check.py --n 8
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODEL_ENV = "VISIONCREATOR_GPU_CHECK_MODEL"
_REAL_TOML = """\
[tools]
text_to_image = "gpu-check"

[models.gpu-check]
pipeline = {pipeline}
source = {source}
min_width = 64
max_width = 2048
min_height = 64
max_height = 2048
multiple_of = 8
max_steps = 1000
default_steps = {steps}
default_guidance = {guidance}
max_guidance = 50.0
"""


def _report_environment() -> bool:
    """Print versions and devices; False when something the check needs is missing."""
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    ok = True
    for name in ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "pydantic", "PIL", "anyio"):
        try:
            module = importlib.import_module(name)
            print(f"  {name:16} {getattr(module, '__version__', '?')}")
        except ImportError as exc:
            print(f"  {name:16} MISSING ({exc})")
            ok = ok and name == "accelerate"  # only CPU offload needs accelerate
    if ok:
        import torch

        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                print(f"  cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB")
        else:
            print(f"  no CUDA device; CPU with {torch.get_num_threads()} torch threads")
    return ok


def _real_model(explicit: str | None) -> str | None:
    """A loadable local directory for a real model, or None."""
    from huggingface_hub import snapshot_download

    candidates = [explicit] if explicit else ["stabilityai/sd-turbo"]
    for candidate in candidates:
        assert candidate is not None
        if Path(candidate).expanduser().is_dir():
            return str(Path(candidate).expanduser().resolve())
        try:
            return str(snapshot_download(candidate, local_files_only=True))
        except Exception as exc:  # any failure means: not on this machine
            print(f"  {candidate}: not in the local Hugging Face cache ({type(exc).__name__})")
    return None


def _backend(args: argparse.Namespace, scratch: Path, max_batch: int) -> tuple[object, str]:
    from visioncreator.tool_servers.diffusion import DiffusionSettings, make_backend

    settings = dict(cache_dir=scratch / "tiny", max_batch=max_batch, batch_wait_ms=100, max_steps=1000)
    model: str | None = args.resolved
    if model is None:
        backend = make_backend("tiny", DiffusionSettings(**settings))
        return backend, "tiny (random weights)"
    index = json.loads((Path(model) / "model_index.json").read_text())
    registry = scratch / "gpu-check.toml"
    registry.write_text(
        _REAL_TOML.format(
            pipeline=json.dumps(index["_class_name"]),
            source=json.dumps(model),
            steps=args.steps,
            guidance=args.guidance,
        )
    )
    backend = make_backend("diffusers", DiffusionSettings(registry=registry, **settings))
    return backend, f"{index['_class_name']} from {model}"


async def _run(args: argparse.Namespace) -> None:
    from visioncreator.tool_servers import TextToImageInput
    from visioncreator.tool_servers.diffusion import DiffusersBackend

    with tempfile.TemporaryDirectory(prefix="vc-gpu-check-") as scratch_name:
        scratch = Path(scratch_name)
        sequential, label = _backend(args, scratch, 1)
        batched, _ = _backend(args, scratch, args.n)
        assert isinstance(sequential, DiffusersBackend)
        assert isinstance(batched, DiffusersBackend)
        started = time.perf_counter()
        batched.warm_up(["text_to_image"])
        sequential.warm_up(["text_to_image"])
        device = batched.device
        print(f"model: {label}; device {device}; loaded in {time.perf_counter() - started:.1f} s")
        requests = [
            TextToImageInput(
                prompt=f"a photo of a red fox reading a newspaper, variation {i}",
                width=args.size,
                height=args.size,
                seed=i,
                steps=args.steps,
                guidance=args.guidance,
            )
            for i in range(args.n)
        ]

        async def one_by_one() -> float:
            start = time.perf_counter()
            for request in requests:
                await sequential.text_to_image(request)
            return time.perf_counter() - start

        async def together() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(batched.text_to_image(request) for request in requests))
            return time.perf_counter() - start

        await together()  # warm-up: kernels, allocator, compilation caches
        await one_by_one()
        seq_s = statistics.median([await one_by_one() for _ in range(args.rounds)])
        bat_s = statistics.median([await together() for _ in range(args.rounds)])
        seq_rate, bat_rate = args.n / seq_s, args.n / bat_s
        print(f"{args.n} images {args.size}x{args.size}, {args.steps} steps, guidance {args.guidance:g}")
        print(f"sequential (max_batch 1):  {seq_rate:8.2f} images/s  ({seq_s / args.n * 1000:.0f} ms per image)")
        print(f"batched (max_batch {args.n}):   {bat_rate:8.2f} images/s  (batches {batched.stats.batch_sizes[-1:]})")
        print(f"ratio batched/sequential: {bat_rate / seq_rate:.2f}x")
        if device.startswith("cuda"):
            import torch

            print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        await sequential.aclose()
        await batched.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help=f"local pipeline dir or cached hub id (else ${MODEL_ENV})")
    parser.add_argument("--n", type=int, default=8, help="images per run (max_batch of the batched run)")
    parser.add_argument("--size", type=int, default=None, help="image side; default 512 (real) or 256 (tiny)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=0.0, help="guidance scale (0 for sd-turbo)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    args = parser.parse_args()
    print("== environment")
    if not _report_environment():
        print("missing packages: install the diffusers extra (pip install -e '.[diffusers]') and rerun")
        raise SystemExit(2)
    print("== model")
    args.resolved = _real_model(args.model or os.environ.get(MODEL_ENV))
    print(f"  using {args.resolved or 'the tiny random pipelines'}")
    if args.size is None:
        args.size = 256 if args.resolved is None else 512
    print("== throughput")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
