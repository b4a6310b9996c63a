"""The ``visioncreator`` command: ``run`` one task; other packages plug in the other subcommands.

The subcommands of other packages (``eval``, ``collect``, ``train``, ``serve-tools``,
``serve-policy``) are entry points of the ``visioncreator.commands`` group, each a
``main(argv) -> int | None`` that owns its arguments, ``--help`` included. This package finds
them by name and never imports the packages above it.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TextIO

from visioncreator.graph.client import ToolClient, ToolServerSpec
from visioncreator.graph.config import AgentConfig, Budgets
from visioncreator.graph.errors import GraphError
from visioncreator.graph.policies import open_policy
from visioncreator.graph.report import render_report
from visioncreator.graph.runner import TaskRunner, open_checkpointer
from visioncreator.graph.trajectory import Trajectory, image_handles
from visioncreator.policy import Split, Task

COMMAND_GROUP = "visioncreator.commands"
"""The entry-point group other packages register their subcommands in."""


def _progress_printer(stream: TextIO) -> Any:
    def show(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            line = f"task: {event['request']!r} ({event['split']}, {event['n_images']} image(s))"
        elif kind == "resume":
            line = f"resuming thread {event['thread_id']} at {', '.join(event['next'])}"
        elif kind == "turn":
            errors = f", {event['errors']} format error(s)" if event.get("errors") else ""
            line = f"[{event['node']}] turn {event['index']}{errors}"
        elif kind == "tool_end":
            result = event["handle"] if event.get("ok") else f"error: {event.get('error')}"
            line = f"  [{event['id']}] {event['name']} -> {result} ({event['latency_s'] * 1000:.0f} ms)"
        elif kind == "reflect":
            faults = f": {'; '.join(event['faults'])}" if event.get("faults") else ""
            line = f"  reflect {event['verdict']} {event.get('image') or ''}{faults}"
        elif kind == "finish":
            line = f"[finish] {event['termination']}: {', '.join(event['answer']) or '(no images)'}"
        else:
            return
        print(line, file=stream, flush=True)

    return show


def _infer_split(images: Sequence[str], n: int) -> Split:
    if images:
        return "img2img"
    return "multi" if n > 1 else "single"


def _tool_spec(args: argparse.Namespace, out: Path) -> ToolServerSpec:
    """A running server at ``--tools-url``, or the bundled one to spawn with the run's settings."""
    if args.tools_url:
        return ToolServerSpec(url=args.tools_url, token=os.environ.get("VISIONCREATOR_TOKEN"))
    store = str(Path(args.store) if args.store else out / "store")
    extra: list[str] = ["--backend", args.backend]
    if args.tool_latency:
        extra += ["--latency", str(args.tool_latency)]
    if args.tool_log:
        extra += ["--call-log", str(args.tool_log)]
    return ToolServerSpec.synthetic(store=store, fault_rate=args.fault_rate, extra_args=extra)


async def _save_images(tools: ToolClient, trajectory: Trajectory, out: Path) -> list[str]:
    """Every image the task saw or made under ``out/images/``, and the answer as ``out/image_N.png``."""
    for handle in image_handles(trajectory.task, trajectory.tool_calls):
        (out / "images" / f"{handle}.png").write_bytes(await tools.read_image(handle))
    written = []
    for i, handle in enumerate(trajectory.answer, 1):
        target = out / f"image_{i}.png"
        target.write_bytes((out / "images" / f"{handle}.png").read_bytes())
        written.append(str(target))
    return written


async def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    budgets = Budgets(max_turns=args.max_turns, max_tool_calls=args.max_tool_calls)
    config = AgentConfig(reflect=not args.no_reflect, observe=args.observe, budgets=budgets)
    record = {"reflect": config.reflect, "observe": config.observe, "budgets": config.budgets.as_dict(),
              "fault_rate": args.fault_rate, "policy": args.policy, "backend": args.backend}  # fmt: skip
    checkpoint = ":memory:" if args.memory else (args.checkpoint or out / "checkpoints.sqlite")
    async with (
        ToolClient(spec=_tool_spec(args, out)) as tools,
        open_policy(args.policy, tools=tools, seed=args.seed, model=args.model, max_tokens=args.max_tokens) as policy,
        open_checkpointer(checkpoint) as saver,
    ):
        inputs = tuple([await tools.upload(data) for data in args.image_bytes])
        split: Split = args.split or _infer_split(inputs, args.n)
        task = Task(request=args.prompt, n_images=args.n, split=split, inputs=inputs)
        runner = TaskRunner(policy=policy, tools=tools, config=config, checkpointer=saver)
        show = (lambda _e: None) if args.quiet else _progress_printer(sys.stderr)
        result = await runner.run(task, seed=args.seed, thread_id=args.thread_id, on_event=show, record=record)
        written = await _save_images(tools, result.trajectory, out)
    (out / "trajectory.json").write_text(result.trajectory.model_dump_json(indent=1))
    (out / "report.html").write_text(render_report(result.trajectory))
    summary = {
        "images": written,
        "trajectory": str(out / "trajectory.json"),
        "report": str(out / "report.html"),
        "termination": result.trajectory.termination,
        "thread_id": result.thread_id,
    }
    print(json.dumps(summary, indent=1))
    return 0 if written else 1


def _run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="Run one task on the offline default (synthetic tools, expert policy).")
    run.add_argument("prompt", help="The request, in words.")
    run.add_argument("--image", action="append", metavar="FILE", help="Input image (repeat for several).")
    run.add_argument("--n", type=int, default=1, help="How many images the answer must hold.")
    run.add_argument("--split", choices=["single", "multi", "img2img"], help="Task kind (inferred by default).")
    run.add_argument("--out", required=True, help="Output folder.")
    run.add_argument("--seed", type=int, default=0, help="Seed of the run.")
    run.add_argument(
        "--policy",
        default="expert",
        help="expert (the scripted teacher, default), an OpenAI-compatible base URL such as "
        "http://127.0.0.1:8000/v1 (vLLM), or a local Hugging Face model directory.",
    )
    run.add_argument("--model", help="Served model name when --policy is a URL (default: the server's first).")
    run.add_argument("--max-tokens", type=int, default=1024, help="Most tokens per turn of a URL or local policy.")
    run.add_argument("--max-turns", type=int, default=Budgets().max_turns, help="Budget: policy turns per task.")
    run.add_argument(
        "--max-tool-calls", type=int, default=Budgets().max_tool_calls, help="Budget: tool calls per task."
    )
    run.add_argument(
        "--observe",
        choices=["inspect", "image", "both"],
        default="inspect",
        help="How the policy sees new images: inspect_image's report (text models), the image (VLMs), or both.",
    )
    run.add_argument("--fault-rate", type=float, default=0.0, help="Synthetic fault injection rate (0-1).")
    run.add_argument("--no-reflect", action="store_true", help="Switch the reflect node off.")
    run.add_argument(
        "--tools-url",
        help="Use a running tool server (streamable HTTP URL) instead of spawning one; "
        "the bearer token, if any, comes from $VISIONCREATOR_TOKEN.",
    )
    run.add_argument("--store", help="Image store folder for the spawned tool server (default OUT/store).")
    run.add_argument(
        "--backend",
        choices=["synthetic", "tiny", "diffusers"],
        default="synthetic",
        help="Image back end of the spawned tool server: synthetic (default, with ground truth), tiny (random "
        "diffusers pipelines, CPU) or diffusers (the models of the registry; needs the diffusers extra).",
    )
    run.add_argument("--tool-latency", type=float, default=0.0, help="Simulated seconds per generated image.")
    run.add_argument("--tool-log", help="Spawned tool server appends a JSON line per generated image here.")
    run.add_argument("--checkpoint", help="SQLite checkpoint file (default OUT/checkpoints.sqlite).")
    run.add_argument("--memory", action="store_true", help="Keep checkpoints in memory (no resume).")
    run.add_argument("--thread-id", help="Checkpoint thread (default: derived from task and seed).")
    run.add_argument("--quiet", action="store_true", help="No progress lines.")
    run.add_argument("--debug", action="store_true", help="Show tracebacks.")


def commands() -> dict[str, EntryPoint]:
    """The plugged-in subcommands by name (entry points of :data:`COMMAND_GROUP`)."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _summary(entry: EntryPoint) -> str:
    """The first line of a plugged-in command's docstring (loading it: only for ``--help``)."""
    try:
        target = entry.load()
    except Exception as exc:  # an extra it needs is missing: say so in the listing
        return f"(cannot load {entry.value}: {exc})"
    lines = (inspect.getdoc(target) or "").splitlines()
    return lines[0] if lines else ""


def _parser(plugged: dict[str, EntryPoint], *, describe: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visioncreator", description="Run one task, or a subcommand another package adds (listed below)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    for name, entry in sorted(plugged.items()):
        sub.add_parser(name, help=_summary(entry) if describe else None, add_help=False)
    return parser


def _dispatch(entry: EntryPoint, argv: Sequence[str]) -> int:
    try:
        command = entry.load()
    except ImportError as exc:
        print(f"visioncreator {entry.name}: cannot load {entry.value}: {exc}", file=sys.stderr)
        return 1
    return int(command(list(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visioncreator`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    plugged = commands()
    if args_list and args_list[0] in plugged:
        # A plugged-in command owns its arguments, `--help` included (and its heavy imports).
        return _dispatch(plugged[args_list[0]], args_list[1:])
    wants_help = not args_list or args_list[0] in ("-h", "--help")
    parser = _parser(plugged, describe=wants_help)
    args = parser.parse_args(args_list)
    if args.n < 1 or args.n > 16:
        parser.error("--n must be between 1 and 16")
    try:
        args.image_bytes = [Path(p).read_bytes() for p in args.image or []]
    except OSError as exc:
        parser.error(f"cannot read input image: {exc}")
    try:
        return asyncio.run(_run(args))
    except (GraphError, ValueError) as exc:
        print(f"visioncreator: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a server died or timed out mid-run: the checkpoint keeps what was done
        if args.debug:
            raise
        print(
            f"visioncreator: error: {_innermost(exc)}\n"
            "The run stopped; what finished is checkpointed: run the same command again to resume "
            "(add --debug for the traceback).",
            file=sys.stderr,
        )
        return 1


def _innermost(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    raise SystemExit(main())
