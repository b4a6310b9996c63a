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

from visioncreator.graph.client import ToolClient
from visioncreator.graph.config import AgentConfig, Budgets, RetrySettings
from visioncreator.graph.connection import ToolServerSpec
from visioncreator.graph.errors import GraphError, PolicyTurnTimeout, ToolServerLost
from visioncreator.graph.folder import (
    CheckpointCorruptError,
    FolderLock,
    FolderLockedError,
    check_checkpoint,
    move_aside,
)
from visioncreator.graph.policies import open_policy
from visioncreator.graph.run_folder import OutputFiles, checked_handles, out_folder_problem, write_outputs
from visioncreator.graph.runner import TaskRunner, open_checkpointer
from visioncreator.policy import Split, Task

COMMAND_GROUP = "visioncreator.commands"
"""The entry-point group other packages register their subcommands in."""

EXIT_BUSY = 75
"""Exit status of a ``run`` whose ``--out`` another run holds (``EX_TEMPFAIL``: try again later)."""


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
        elif kind == "tool_server_lost":
            line = f"tool server lost: {event['error']}; reconnecting and resuming ({event['reconnect']}/{event['of']})"
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


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    """The loop's settings from the flags; an unset policy knob keeps the config's default."""
    budgets = Budgets(max_turns=args.max_turns, max_tool_calls=args.max_tool_calls)
    knobs: dict[str, Any] = {}
    if args.policy_timeout is not None:
        knobs["policy_timeout_s"] = args.policy_timeout
    if args.policy_retries is not None:
        knobs["policy_retry"] = RetrySettings(max_attempts=args.policy_retries + 1)
    return AgentConfig(reflect=not args.no_reflect, observe=args.observe, budgets=budgets, **knobs)


def _restart(checkpoint: str | Path) -> None:
    """``--restart``: move the checkpoint (and its -wal/-shm) aside, so the task starts over."""
    try:
        check_checkpoint(checkpoint)
        label = "restarted"
    except CheckpointCorruptError:
        label = "corrupt"
    moved = move_aside(checkpoint, label=label)
    if moved is None:
        print(f"visioncreator: no checkpoint at {checkpoint}: starting the task fresh", file=sys.stderr)
    else:
        print(f"visioncreator: moved the checkpoint aside to {moved}; starting the task over", file=sys.stderr)


async def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config = _agent_config(args)
    record = {"reflect": config.reflect, "observe": config.observe, "budgets": config.budgets.as_dict(),
              "fault_rate": args.fault_rate, "policy": args.policy, "backend": args.backend,
              "policy_timeout_s": config.policy_timeout_s,
              "policy_attempts": config.policy_retry.max_attempts}  # fmt: skip
    checkpoint = ":memory:" if args.memory else (args.checkpoint or out / "checkpoints.sqlite")
    # One writer per folder, held from before the checkpoint is opened (or moved aside) and the
    # tool server spawned (its store is OUT/store) until the last file is written.
    with FolderLock(out, what="a run"):
        if args.restart and not args.memory:
            _restart(checkpoint)
        # The checkpoint first: a corrupt one is reported before a tool server is spawned.
        async with (
            open_checkpointer(checkpoint) as saver,
            ToolClient(spec=_tool_spec(args, out)) as tools,
            open_policy(
                args.policy, tools=tools, seed=args.seed, model=args.model, max_tokens=args.max_tokens,
                timeout_s=args.policy_timeout, max_retries=args.policy_retries,
            ) as policy,
        ):  # fmt: skip
            inputs = tuple(checked_handles([await tools.upload(data) for data in args.image_bytes]))
            split: Split = args.split or _infer_split(inputs, args.n)
            task = Task(request=args.prompt, n_images=args.n, split=split, inputs=inputs)
            runner = TaskRunner(policy=policy, tools=tools, config=config, checkpointer=saver)
            show = (lambda _e: None) if args.quiet else _progress_printer(sys.stderr)
            result = await runner.run(task, seed=args.seed, thread_id=args.thread_id, on_event=show, record=record)
            written = await write_outputs(tools, result.trajectory, out)
    files = OutputFiles(out)
    summary = {
        "images": written,
        "trajectory": str(files.trajectory),
        "report": str(files.report),
        "termination": result.trajectory.termination,
        "thread_id": result.thread_id,
    }
    print(json.dumps(summary, indent=1))
    return 0 if written else 1


_EPILOG = f"""\
Files: everything the run writes stays under --out (images/<handle>.png, image_N.png,
trajectory.json, report.html, checkpoints.sqlite, and store/ for a spawned tool server);
--checkpoint, --store and --tool-log may name files elsewhere. One run at a time per --out:
a second run on the same folder stops at once (the lock is on --out, even when --checkpoint
points elsewhere).

Exit status: 0 the answer holds an image; 1 an error, or no image in the answer; 2 bad arguments;
{EXIT_BUSY} another run holds --out (EX_TEMPFAIL: try again when it has finished).
"""


def _run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="Run one task on the offline default (synthetic tools, expert policy).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    run.add_argument(
        "--policy-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help=f"Longest policy turn (default {AgentConfig().policy_timeout_s:g} s); for a URL policy also "
        "the timeout of each HTTP request (default: the policy's own, 120 s).",
    )
    run.add_argument(
        "--policy-retries",
        type=_non_negative_int,
        metavar="N",
        help=f"Retries after a failed first attempt: of a policy turn whose model server is unreachable "
        f"(default {RetrySettings().max_attempts - 1}), and for a URL policy of each HTTP request on connection "
        "errors and HTTP 5xx (default: the policy's own, 3).",
    )
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
    run.add_argument(
        "--restart",
        action="store_true",
        help="Start the task over: move the checkpoint file (and its -wal/-shm) aside to "
        "NAME.corrupt-TIME first, e.g. when it is corrupt. Nothing is deleted.",
    )
    run.add_argument("--thread-id", help="Checkpoint thread (default: derived from task and seed).")
    run.add_argument("--quiet", action="store_true", help="No progress lines.")
    run.add_argument("--debug", action="store_true", help="Show tracebacks.")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


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
    problem = out_folder_problem(Path(args.out))
    if problem:
        print(f"visioncreator: error: {problem}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(args))
    except Exception as exc:
        return _stopped(exc, debug=args.debug)


def _stopped(exc: Exception, *, debug: bool) -> int:
    """Say why the run stopped, advising a rerun only where resuming helps; the exit status."""
    leaf = _leaf(exc)
    if isinstance(leaf, FolderLockedError):
        print(f"visioncreator: error: {leaf}", file=sys.stderr)
        return EXIT_BUSY
    if isinstance(leaf, ToolServerLost):
        print(
            f"visioncreator: error: the tool server was lost mid-task: {str(leaf).rstrip('.')}. Finished steps "
            "are checkpointed: run the same command again to resume (a spawned server is restarted).",
            file=sys.stderr,
        )
        return 1
    # A corrupt checkpoint, a bad handle, bad input, an unreachable server: the same command would
    # fail the same way, so no advice to rerun it (each message says what to do instead).
    if isinstance(leaf, GraphError | ValueError) and not isinstance(leaf, PolicyTurnTimeout):
        print(f"visioncreator: error: {leaf}", file=sys.stderr)
        return 1
    if debug:
        raise exc
    # A server died or timed out mid-run: the checkpoint keeps what was done.
    print(
        f"visioncreator: error: {type(leaf).__name__}: {leaf}\n"
        "The run stopped; what finished is checkpointed: run the same command again to resume "
        "(add --debug for the traceback).",
        file=sys.stderr,
    )
    return 1


def _leaf(exc: BaseException) -> BaseException:
    """The first exception an exception group holds (task groups wrap what a task raised)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
