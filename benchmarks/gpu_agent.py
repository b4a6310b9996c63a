"""GPU benchmark of the whole agent: real-sized random pipelines behind the tool server, in one go.

Builds random-weight pipelines (``benchmarks/gpu_pipelines.py``: the sd-turbo architecture, or
the tiny ones with ``--size tiny``), starts ``visioncreator-tools --backend diffusers`` on them over
streamable HTTP (``--preload`` when the server has it, else a warm-up call per tool), and prints:

1. images/s of ``text_to_image`` through the server, n calls one after another vs n at once
   (micro-batched), at each ``--batch-sizes`` n; and per sequential call, round trip vs generator;
2. whole-task wall vs critical-path generator time, single and multi tasks of the built-in suite,
   expert policy, through the graph's ``TaskRunner`` with a durable SQLite checkpointer (and one
   task through ``visioncreator run --tools-url`` as a process). Critical path: per batch of
   concurrent calls, the longest generator time (``generator_s``, as the server measured it),
   summed over batches; ``+inspect`` adds each image's ``inspect_image`` detectors to its chain;
3. rollouts (``visioncreator.rl.collect``, expert, the same suite mix) one at a time vs
   ``--rollouts`` at once through the one server and its micro-batcher: trajectories/s, images/s.

Results print as tables and go to ``--json`` (default ``$OUT/gpu_agent.json`` when ``$OUT`` is set),
rewritten after every stage so a run cut short still returns what it measured.

Here, build the wheel bundle: ``bash benchmarks/gpu_agent.sh bundle``. On a lent GPU machine, through
the device tool's ``run`` with ``carry=["build/gpu-wheels"]`` and ``timeout_s=570``:
``set -o pipefail; bash benchmarks/gpu_agent.sh 2>&1 | tee $OUT/gpu_agent.log`` (it installs the
bundle; about 5 minutes). On a CPU: ``python benchmarks/gpu_agent.py --device cpu --size tiny``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))  # after the stdlib: nothing here shadows it
from _servers import http_server
from gpu_pipelines import build
from visioncreator.graph import TaskRunner, ToolClient, ToolServerSpec, Trajectory, expert_policy, open_checkpointer
from visioncreator.policy import Task
from visioncreator.rl import CollectConfig, collect
from visioncreator.tool_servers import IMAGE_TOOLS

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "langgraph", "mcp", "pydantic", "visioncreator")
IMAGE_ORDER = ("text_to_image", "edit_image", "reference_to_image")
PROMPT = "a photo of a red fox reading a newspaper on a park bench, variation {i}"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load1": os.getloadavg()[0]}
    for name in PACKAGES:
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    info["date"] = time.strftime("%Y-%m-%d")
    info["image_mismatches"] = image_mismatches(args.wheels / "on-image.txt")
    return info


def image_mismatches(path: Path) -> list[str]:
    """Our requirements on packages the GPU image holds that its versions do not meet (gpu_wheels.py wrote them)."""
    if not path.is_file():
        return []
    from packaging.specifiers import SpecifierSet

    bad = []
    for line in path.read_text().splitlines():
        name, _, spec = line.partition(" ")
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            bad.append(f"{name} missing (wants {spec or 'any'})")
            continue
        if spec and version not in SpecifierSet(spec):
            bad.append(f"{name} {version} does not meet {spec}")
    return bad


def preload_flag() -> list[str]:
    """``--preload`` if this tool server has it (issue 13, item 5), else nothing: a warm-up call loads instead."""
    helped = subprocess.run([sys.executable, "-m", "visioncreator.tool_servers", "--help"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return ["--preload"] if "--preload" in helped else []


def server_args(args: argparse.Namespace, registry: Path, call_log: Path) -> list[str]:
    # Limits far above what the benchmark sends: it measures the batcher, not admission control.
    return [
        *("--backend", "diffusers", "--registry", str(registry), "--device", args.device),
        *("--dtype", "float16" if args.device.startswith("cuda") else "float32"),
        *("--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), "--max-steps", "1000"),
        *("--max-concurrency", "1024", "--max-queue", "4096", "--max-session-requests", "4096"),
        *("--max-connections", "1024", "--max-inflight-pixels", str(2**34), "--request-timeout", "600"),
        *("--call-log", str(call_log)),
    ]


async def call(client: ToolClient, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    outcome = await client.call(name, arguments)
    if not outcome.ok or outcome.structured is None:
        raise RuntimeError(f"{name} failed: {outcome.error}")
    return {**outcome.structured, "latency_s": outcome.latency_s}


def t2i(args: argparse.Namespace, i: int) -> dict[str, Any]:
    return {"prompt": PROMPT.format(i=i), "width": args.side, "height": args.side, "seed": i, "steps": args.steps}


async def warm_up(client: ToolClient, args: argparse.Namespace) -> dict[str, float]:
    """One call of each image tool (loads its pipeline unless preloaded), then each batch size once."""
    first = await call(client, "text_to_image", t2i(args, 0))
    edit = await call(client, "edit_image", {"image": first["handle"], "instruction": "make the fox blue", "seed": 1})
    refs = {"prompt": "the same fox in the snow", "references": [first["handle"], edit["handle"]], "seed": 2}
    ref = await call(client, "reference_to_image", {**refs, "width": args.side, "height": args.side})
    for n in args.batch_sizes:  # kernels and allocator sizes of every batch shape timed below
        await asyncio.gather(*(call(client, "text_to_image", t2i(args, 100 + i)) for i in range(n)))
    return {name: round(r["latency_s"], 3) for name, r in zip(IMAGE_ORDER, (first, edit, ref), strict=True)}


async def micro_batching(client: ToolClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.batch_sizes:
        seq_s, bat_s, latency, generator = [], [], [], []
        for r in range(args.rounds):
            base = 1000 * (r + 1) + 10 * n
            started = time.perf_counter()
            for i in range(n):
                result = await call(client, "text_to_image", t2i(args, base + i))
                latency.append(result["latency_s"])
                generator.append(result["generator_s"])
            seq_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.gather(*(call(client, "text_to_image", t2i(args, base + 500 + i)) for i in range(n)))
            bat_s.append(time.perf_counter() - started)
        seq, bat = n / statistics.median(seq_s), n / statistics.median(bat_s)
        rows.append({
            "n": n, "sequential_images_s": round(seq, 2), "batched_images_s": round(bat, 2),
            "ratio": round(bat / seq, 2), "sequential_call_ms": round(1000 * statistics.median(latency), 1),
            "sequential_generator_ms": round(1000 * statistics.median(generator), 1),
        })  # fmt: skip
    return rows


def critical_path(trajectory: Trajectory) -> tuple[float, float]:
    """Generator seconds on the critical path: image calls alone, and with their inspections."""
    batches: dict[int, dict[str, float]] = {}
    images: dict[int, dict[str, float]] = {}
    for c in trajectory.tool_calls:
        seconds = float((c.result or {}).get("generator_s", 0.0)) if c.ok else 0.0
        chains = batches.setdefault(c.batch, {})
        key = c.handle or c.id
        chains[key] = chains.get(key, 0.0) + seconds
        if c.name in IMAGE_TOOLS:
            images.setdefault(c.batch, {})[key] = seconds
    gen = sum(max(chains.values(), default=0.0) for chains in images.values())
    full = sum(max(chains.values(), default=0.0) for chains in batches.values())
    return gen, full


def suite(split: str | None = None) -> list[dict[str, Any]]:
    text = files("visioncreator.evals").joinpath("data", "synthetic.jsonl").read_text()
    tasks = [json.loads(line) for line in text.splitlines() if line.strip()]
    if split is not None:
        return [t for t in tasks if t["split"] == split]
    singles, multis = suite("single"), suite("multi")
    return [t for pair in zip(singles, multis, strict=False) for t in pair]


def median(values: Sequence[float], digits: int = 3) -> float | None:
    return round(statistics.median(values), digits) if values else None


def task_row(label: str, walls: list[float], paths: list[tuple[float, float]], images: list[int]) -> dict[str, Any]:
    gen = [g for g, _ in paths]
    full = [f for _, f in paths]
    return {
        "tasks": label, "n": len(walls), "images_per_task": round(statistics.mean(images), 2),
        "wall_s": median(walls), "generator_cp_s": median(gen),
        "ratio": median([w / g for w, g in zip(walls, gen, strict=True) if g]),
        "with_inspect_cp_s": median(full),
        "ratio_with_inspect": median([w / f for w, f in zip(walls, full, strict=True) if f]),
    }  # fmt: skip


async def whole_tasks(client: ToolClient, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows = []
    async with open_checkpointer(work / "tasks.sqlite") as saver:
        runner = TaskRunner(policy=expert_policy(), tools=client, checkpointer=saver)
        for split in ("single", "multi"):
            chosen = suite(split)[: args.tasks + 1]
            walls, paths, images = [], [], []
            for k, spec in enumerate(chosen):
                task = Task(request=spec["request"], n_images=spec["n_images"], split=spec["split"])
                result = await runner.run(task, seed=k, thread_id=f"gpu-agent-{split}-{k}")
                if k == 0:
                    continue  # warm-up: the expert's and the graph's first-use costs
                walls.append(result.wall_s)
                paths.append(critical_path(result.trajectory))
                images.append(sum(c.name in IMAGE_TOOLS for c in result.trajectory.tool_calls))
            rows.append(task_row(split, walls, paths, images))
    rows.append(cli_task(args, work))
    return rows


def cli_task(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One single task through ``visioncreator run --tools-url``: the process, start-up included."""
    out = work / "cli-run"
    command = [sys.executable, "-m", "visioncreator.graph", "run", suite("single")[0]["request"],
               "--tools-url", args.url, "--out", str(out), "--quiet"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    process = time.perf_counter() - started
    trajectory = Trajectory.model_validate_json((out / "trajectory.json").read_text())
    images = [sum(c.name in IMAGE_TOOLS for c in trajectory.tool_calls)]
    row = task_row("single via CLI", [trajectory.timings.wall_s], [critical_path(trajectory)], images)
    return {**row, "process_wall_s": round(process, 3)}


async def rollouts(client: ToolClient, args: argparse.Namespace, store: Path, call_log: Path) -> list[dict[str, Any]]:
    """The same tasks (single and multi alternating) once each one at a time, then x group size all at once."""
    rows: list[dict[str, Any]] = []
    mix = suite()[: args.rollouts // args.group_size]
    for level, (concurrency, group) in enumerate(((1, 1), (args.rollouts, args.group_size))):
        config = CollectConfig(
            group_size=group, concurrency=concurrency, store=store, fault_rate=0.0, seed=10_000 * (level + 1)
        )
        before = len(call_log.read_text().splitlines())
        started = time.perf_counter()
        records = await collect(mix, policy=expert_policy(), tools=client, config=config)
        wall = time.perf_counter() - started
        images = len(call_log.read_text().splitlines()) - before
        answered = sum(r.termination == "answered" for r in records)
        rows.append({
            "concurrency": concurrency, "trajectories": len(records), "answered": answered, "wall_s": round(wall, 2),
            "trajectories_s": round(len(records) / wall, 3), "images": images, "images_s": round(images / wall, 2),
        })  # fmt: skip
    base = rows[0]["trajectories_s"]
    for row in rows:
        row["speedup"] = round(row["trajectories_s"] / base, 2)
    return rows


def table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    print(f"\n== {title}")
    if not rows:
        return
    heads = list(rows[0])
    widths = [max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in heads]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row.get(h, "")).rjust(w) for h, w in zip(heads, widths, strict=True)))


async def measure(args: argparse.Namespace, work: Path, results: dict[str, Any], save: Any) -> None:
    registry, results["pipelines"] = build(args.size, work / "pipelines", args.device)
    print(f"pipelines: {json.dumps(results['pipelines'])}")
    store, call_log = work / "store", work / "calls.jsonl"
    call_log.touch()
    extra = [*server_args(args, registry, call_log), *preload_flag()]
    started = time.perf_counter()
    with http_server(store, *extra, ready_timeout_s=args.ready_timeout) as url:
        args.url = url
        results["server"] = {"ready_s": round(time.perf_counter() - started, 2), "preload": "--preload" in extra,
                             "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms}  # fmt: skip
        async with ToolClient(spec=ToolServerSpec(url=url, call_timeout_s=600)) as client:
            results["server"]["first_call_s"] = await warm_up(client, args)
            print(f"server: {json.dumps(results['server'])}")
            save()
            results["micro_batching"] = await micro_batching(client, args)
            table(f"text_to_image through the server, {args.side}², {args.steps} steps", results["micro_batching"])
            save()
            results["tasks"] = await whole_tasks(client, args, work)
            table("whole task wall vs critical-path generator time (medians)", results["tasks"])
            save()
            results["rollouts"] = await rollouts(client, args, store, call_log)
            peak = max(row["batched_images_s"] for row in results["micro_batching"])
            for row in results["rollouts"]:  # how much of the batcher's best the agent's rollouts get
                row["of_batched_peak"] = round(row["images_s"] / peak, 2)
            table("rollouts (expert, single/multi mix) one at a time vs concurrent", results["rollouts"])
            save()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device of the pipelines (cuda, cpu)")
    parser.add_argument("--size", choices=("real", "tiny"), default="real", help="pipeline architecture")
    parser.add_argument("--side", type=int, help="image side of the micro-batching rows (default 512; tiny 256)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of the micro-batching rows")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32], help="n of the micro-batching rows")
    parser.add_argument("--rounds", type=int, help="timed rounds per micro-batching row, median (3; tiny 1)")
    parser.add_argument("--max-batch", type=int, default=32, help="server --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0, help="server --batch-wait-ms (its default)")
    parser.add_argument("--tasks", type=int, help="timed tasks per split after one warm-up task (4; tiny 2)")
    parser.add_argument("--rollouts", type=int, help="concurrent rollouts, and how many (64; tiny 16)")
    parser.add_argument(
        "--cpu-threads", type=int, default=1, help="OMP_NUM_THREADS of every process on --device cpu (unless set)"
    )
    parser.add_argument(
        "--group-size",
        type=int,
        default=4,
        help="samples per task in the concurrent rollout row (the one-at-a-time "
        "row runs each of its rollouts/group-size tasks once)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds the server may take to listen")
    parser.add_argument("--wheels", type=Path, default=Path("build/gpu-wheels"), help="the carried wheel folder")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="result file (default $OUT/gpu_agent.json when $OUT is set)")
    args = parser.parse_args()
    # Tiny defaults keep a CPU run to a few minutes; the real ones fill about 5 of a GPU call's 10.
    real = args.size == "real"
    args.side = args.side or (512 if real else 256)
    args.rounds = args.rounds or (3 if real else 1)
    args.tasks = args.tasks or (4 if real else 2)
    args.rollouts = args.rollouts or (64 if real else 16)
    if args.device == "cpu":
        # Two torch threads per process on a 2-core machine shared by the server, the agent and
        # others run 5-9x slower than one (measured here): oversubscription, not compute.
        os.environ.setdefault("OMP_NUM_THREADS", str(args.cpu_threads))
    if args.json is None and os.environ.get("OUT"):
        args.json = Path(os.environ["OUT"]) / "gpu_agent.json"
    return args


def main() -> None:
    args = parse()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "environment": environment(args)}
    print(f"environment: {json.dumps(results['environment'])}")

    def save() -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1))

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vc-gpu-agent-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        try:
            asyncio.run(measure(args, work, results, save))
        finally:
            results["total_s"] = round(time.perf_counter() - started, 1)
            results["load1_end"] = os.getloadavg()[0]
            save()
            log = work / "store-server.log"
            if log.is_file() and "Traceback" in (text := log.read_text()):
                print(f"server log (tail):\n{text[-3000:]}")
    print(f"\ntotal {results['total_s']} s" + (f"; results in {args.json}" if args.json else ""))


if __name__ == "__main__":
    main()
