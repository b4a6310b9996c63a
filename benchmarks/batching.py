"""Micro-batching throughput of the ``tiny`` diffusers back end: batched vs sequential.

Runs the same N text-to-image requests twice through ``DiffusersBackend``: once as N concurrent
requests with ``max_batch = N`` (one pipeline call), once one after another with
``max_batch = 1``. Prints images per second of both and their ratio. Target: batched >= 1.5x
sequential at N = 8 on a 2-core CPU at 256x256 with 4 steps.

    python benchmarks/batching.py                      # 8 requests, 256x256, 4 steps
    python benchmarks/batching.py --threads 1 2        # compare torch thread counts
    python benchmarks/batching.py --size 128 256 --steps 2 4

The tiny pipelines are built into a temporary directory unless --cache-dir is given.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from visioncreator.tool_servers import TextToImageInput
from visioncreator.tool_servers.diffusion import DiffusersBackend, DiffusionSettings, make_backend


def _requests(n: int, size: int, steps: int) -> list[TextToImageInput]:
    return [
        TextToImageInput(prompt=f"a red fox number {i}", width=size, height=size, seed=i, steps=steps) for i in range(n)
    ]


async def _batched(backend: DiffusersBackend, requests: list[TextToImageInput]) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(backend.text_to_image(r) for r in requests))
    return time.perf_counter() - start


async def _sequential(backend: DiffusersBackend, requests: list[TextToImageInput]) -> float:
    start = time.perf_counter()
    for request in requests:
        await backend.text_to_image(request)
    return time.perf_counter() - start


def _backend(cache: Path, max_batch: int, threads: int | None, device: str | None) -> DiffusersBackend:
    settings = DiffusionSettings(
        cache_dir=cache, max_batch=max_batch, batch_wait_ms=50, torch_threads=threads, device=device
    )
    backend = make_backend("tiny", settings)
    assert isinstance(backend, DiffusersBackend)
    backend.warm_up(["text_to_image"])
    return backend


async def measure(
    batched: DiffusersBackend, sequential: DiffusersBackend, requests: list[TextToImageInput], rounds: int
) -> tuple[float, float]:
    """Median images per second of ``requests`` run batched and run one by one (after one warm-up each)."""
    await _batched(batched, requests)  # warm-up: first calls pay for allocations and kernel selection
    await _sequential(sequential, requests)
    batched_s: list[float] = []
    sequential_s: list[float] = []
    for _ in range(rounds):  # interleaved, so background load hits both alike
        batched_s.append(await _batched(batched, requests))
        sequential_s.append(await _sequential(sequential, requests))
    n = len(requests)
    return n / statistics.median(batched_s), n / statistics.median(sequential_s)


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vc-tiny-") as scratch:
        cache = args.cache_dir or Path(scratch)
        print(f"tiny back end, {args.n} requests, {args.rounds} rounds (median), cache {cache}")
        print(f"{'threads':>7} {'size':>5} {'steps':>5} {'sequential img/s':>17} {'batched img/s':>14} {'ratio':>6}")
        for threads, size, steps in itertools.product(args.threads, args.size, args.steps):
            batched = _backend(cache, args.n, threads, args.device)
            sequential = _backend(cache, 1, threads, args.device)
            requests = _requests(args.n, size, steps)
            batched_rate, sequential_rate = await measure(batched, sequential, requests, args.rounds)
            assert batched.stats.batch_sizes[-1] == args.n
            assert max(sequential.stats.batch_sizes) == 1
            label = "default" if threads is None else str(threads)
            print(
                f"{label:>7} {size:>5} {steps:>5} {sequential_rate:>17.2f} {batched_rate:>14.2f} "
                f"{batched_rate / sequential_rate:>5.2f}x"
            )
            await batched.aclose()
            await sequential.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="concurrent requests (and max_batch of the batched run)")
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="image side(s), multiples of 16")
    parser.add_argument("--steps", type=int, nargs="+", default=[4], help="denoising step count(s)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[None], help="torch thread count(s); default: torch's own"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per setting")
    parser.add_argument("--device", default=None, help="torch device; default picks cuda, mps or cpu")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the tiny pipelines are (or get built)")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
