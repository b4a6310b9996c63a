"""The ``visioncreator`` command: ``run`` one task; other packages plug in the other subcommands.

The subcommands of other packages (``eval``, ``collect``, ``train``, ``serve-tools``,
``serve-policy``) are entry points of the ``visioncreator.commands`` group, each a
``main(argv) -> int | None`` that owns its arguments, ``--help`` included. This package finds
them by name and never imports the packages above it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules at the top: `--help` and the plugged-in subcommands never import LangGraph,
# the MCP SDK or a policy back end, and `run` imports them in the order that lets its tool
# server start early (see `_run`).
from visioncreator.graph.arguments import CommandParser
from visioncreator.graph.errors import GraphError, PolicyTurnTimeout, ToolServerLost
from visioncreator.graph.folder import (
    LOCK_FILE,
    CheckpointCorruptError,
    FolderLock,
    FolderLockedError,
    check_checkpoint,
    folder_entries,
    move_aside,
    remove_new,
)
from visioncreator.graph.progress import event_printer
from visioncreator.graph.run_args import EXIT_BUSY, RUN_HELP, add_run_parser, run_args_problem

if TYPE_CHECKING:
    from visioncreator.graph.client import ToolClient
    from visioncreator.graph.config import AgentConfig
    from visioncreator.graph.connection import ToolServerSpec
    from visioncreator.policy import Split

COMMAND_GROUP = "visioncreator.commands"
"""The entry-point group other packages register their subcommands in."""


def _infer_split(images: Sequence[str], n: int) -> Split:
    if images:
        return "img2img"
    return "multi" if n > 1 else "single"


_PRELOAD_CONNECT_TIMEOUT_S = 1800.0
"""How long `run` waits for a spawned tiny or diffusers server: it loads every model before it answers."""


def _tool_spec(args: argparse.Namespace, out: Path) -> ToolServerSpec:
    """A running server at ``--tools-url``, or the bundled one to spawn with the run's settings."""
    import dataclasses

    from visioncreator.graph.connection import ToolServerSpec

    if args.tools_url:
        return ToolServerSpec(url=args.tools_url, token=os.environ.get("VISIONCREATOR_TOKEN"))
    store = str(Path(args.store) if args.store else out / "store")
    extra: list[str] = ["--backend", args.backend]
    if args.tool_latency:
        extra += ["--latency", str(args.tool_latency)]
    if args.tool_log:
        extra += ["--call-log", str(args.tool_log)]
    spec = ToolServerSpec.synthetic(store=store, fault_rate=args.fault_rate, extra_args=extra)
    if args.backend != "synthetic":
        spec = dataclasses.replace(spec, connect_timeout_s=max(spec.connect_timeout_s, _PRELOAD_CONNECT_TIMEOUT_S))
    return spec


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    """The loop's settings from the flags; an unset policy knob keeps the config's default."""
    from visioncreator.graph.config import AgentConfig, Budgets, RetrySettings

    budgets = Budgets(max_turns=args.max_turns, max_tool_calls=args.max_tool_calls)
    knobs: dict[str, Any] = {}
    if args.policy_timeout is not None:
        knobs["policy_timeout_s"] = args.policy_timeout
    if args.policy_retries is not None:
        knobs["policy_retry"] = RetrySettings(max_attempts=args.policy_retries + 1)
    return AgentConfig(reflect=not args.no_reflect, observe=args.observe, budgets=budgets, review=args.review, **knobs)


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


_RUN_MODULES = ("visioncreator.graph.runner", "visioncreator.graph.policies", "visioncreator.graph.offline")
"""What `run` imports while its tool server starts (LangGraph, the checkpointers, the policies)."""


def _import_run_modules(names: Sequence[str]) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


async def _open_tools(args: argparse.Namespace, out: Path, stack: Any) -> ToolClient:
    """Connect to the tool server, importing the rest of `run` while a spawned one starts.

    A spawned server takes most of a second to import and answer; LangGraph takes as long to
    import here. Importing in a worker thread while the event loop spawns the server and waits
    for its answer runs the two at once, on two cores (the thread holds the GIL for the import,
    the server is another process).
    """
    import asyncio

    from visioncreator.graph.client import ToolClient

    modules = list(_RUN_MODULES)
    if args.policy == "expert":
        modules.append("visioncreator.tool_servers.synthetic")  # the expert's critic
    importing = asyncio.ensure_future(asyncio.to_thread(_import_run_modules, modules))
    try:
        tools: ToolClient = await stack.enter_async_context(ToolClient(spec=_tool_spec(args, out)))
    finally:
        await importing  # the thread finishes either way: no import is left half done
    return tools


async def _run(args: argparse.Namespace, started: list[bool]) -> int:
    """Run the task with ``--out`` locked; a run that stops before its first step leaves nothing behind."""
    out = Path(args.out)
    before = folder_entries(out)
    checkpoint = ":memory:" if args.memory else (args.checkpoint or out / "checkpoints.sqlite")
    # One writer per folder, held from before the checkpoint is opened (or moved aside) and the
    # tool server spawned (its store is OUT/store) until the last file is written.
    with FolderLock(out, what="a run"):
        try:
            if args.restart and not args.memory:
                _restart(checkpoint)
                if before is not None:  # what it moved aside was there before: never removed below
                    before = before | (folder_entries(out) or frozenset()) - {LOCK_FILE}
            if not args.memory:
                check_checkpoint(checkpoint)  # a corrupt one is reported before a tool server is spawned
            return await _run_locked(args, out, checkpoint, started)
        except BaseException:
            if not started:  # nothing was checkpointed: no folder (or file in it) is left behind
                remove_new(out, before)
            raise


async def _run_locked(args: argparse.Namespace, out: Path, checkpoint: str | Path, started: list[bool]) -> int:
    from contextlib import AsyncExitStack

    from visioncreator.graph.run_folder import OutputFiles, RunClock, checked_handles, write_outputs

    config = _agent_config(args)
    record = {"reflect": config.reflect, "observe": config.observe, "budgets": config.budgets.as_dict(),
              "fault_rate": args.fault_rate, "policy": args.policy, "backend": args.backend,
              "policy_timeout_s": config.policy_timeout_s,
              "policy_attempts": config.policy_retry.max_attempts, "review": config.review}  # fmt: skip
    files = OutputFiles(out)
    async with AsyncExitStack() as stack:
        tools = await _open_tools(args, out, stack)
        from visioncreator.graph.policies import open_policy
        from visioncreator.graph.runner import TaskRunner, open_checkpointer, thread_id_for
        from visioncreator.policy import Task

        resuming = not args.memory and Path(checkpoint).exists()
        saver = await stack.enter_async_context(open_checkpointer(checkpoint))
        policy = await stack.enter_async_context(
            open_policy(
                args.policy, tools=tools, seed=args.seed, model=args.model, max_tokens=args.max_tokens,
                timeout_s=args.policy_timeout, max_retries=args.policy_retries,
            )
        )  # fmt: skip
        inputs = tuple(checked_handles([await tools.upload(data) for data in args.image_bytes]))
        split: Split = args.split or _infer_split(inputs, args.n)
        task = Task(request=args.prompt, n_images=args.n, split=split, inputs=inputs)
        runner = TaskRunner(policy=policy, tools=tools, config=config, checkpointer=saver)
        thread_id = args.thread_id or thread_id_for(task, args.seed)
        clock = RunClock(files.clock, thread_id=thread_id, resuming=resuming) if not args.memory else None
        show = (lambda _e: None) if args.quiet else event_printer(sys.stderr)

        def on_event(event: dict[str, Any]) -> None:
            if not started:
                started.append(True)
            if clock is not None and not event.get("finished"):
                clock.tick()
            show(event)

        from visioncreator.graph.console import console_reviewer

        reviewer = console_reviewer(sys.stdin, sys.stderr, tools=tools, out=out) if args.review else None
        result = await runner.run(
            task, seed=args.seed, thread_id=args.thread_id, on_event=on_event, record=record, reviewer=reviewer
        )
        trajectory = result.trajectory
        if clock is not None:
            # The clock started before the runner: its time covers the runner's and every earlier run's.
            total = clock.tick(force=True) if result.wall_s else clock.earlier_s
            timings = trajectory.timings.model_copy(update={"wall_s": total})
            trajectory = trajectory.model_copy(update={"timings": timings})
        written = await write_outputs(tools, trajectory, out)
    summary = {
        "images": written,
        "trajectory": str(files.trajectory),
        "report": str(files.report),
        "termination": trajectory.termination,
        "thread_id": result.thread_id,
        "wall_s": trajectory.timings.wall_s,
    }
    print(json.dumps(summary, indent=1))
    return 0 if written else 1


def commands() -> dict[str, EntryPoint]:
    """The plugged-in subcommands by name (entry points of :data:`COMMAND_GROUP`)."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _summary(entry: EntryPoint) -> str:
    """The first line of a plugged-in command's docstring, read from its source where it can be.

    Reading the source (without running it) keeps ``visioncreator --help`` from importing every
    subcommand's package (the evals and RL packages import LangGraph, the MCP SDK and more);
    a command whose source is not a plain file next to ours is loaded instead.
    """
    doc = _source_docstring(entry.module, entry.attr)
    if doc is None:
        import inspect

        try:
            target = entry.load()
        except Exception as exc:  # an extra it needs is missing: say so in the listing
            return f"(cannot load {entry.value}: {exc})"
        doc = inspect.getdoc(target) or ""
    lines = doc.splitlines()
    return lines[0] if lines else ""


def _source_docstring(module: str, attr: str) -> str | None:
    """The docstring of function or class ``attr`` in ``module``'s source file, found without importing it."""
    import ast
    import importlib.util

    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    parts = rest.split(".") if rest else []
    for base in spec.submodule_search_locations:
        candidates = [Path(base, *parts, "__init__.py")]
        if parts:
            candidates.insert(0, Path(base, *parts[:-1], f"{parts[-1]}.py"))
        for candidate in candidates:
            if not candidate.is_file():
                continue
            try:
                tree = ast.parse(candidate.read_text("utf-8"))
            except (OSError, SyntaxError, ValueError):
                return None
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == attr:
                    return ast.get_docstring(node) or ""
            return None  # defined elsewhere (re-exported): load it
    return None


def _parser(plugged: dict[str, EntryPoint], *, describe: bool, run: bool = True) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="visioncreator", description="Run one task, or a subcommand another package adds (listed below)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    if run:
        add_run_parser(sub)
    else:  # listing the subcommands only: `run`'s flags (and the config they quote) are not needed
        sub.add_parser("run", help=RUN_HELP, add_help=False)
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
    parser = _parser(plugged, describe=wants_help, run=bool(args_list) and args_list[0] == "run")
    args = parser.parse_args(args_list)
    problem = run_args_problem(args)  # before anything starts: no server, no folder
    if problem:
        print(f"visioncreator run: error: {problem} (see visioncreator run --help)", file=sys.stderr)
        return 2
    import asyncio

    started: list[bool] = []  # holds True once the task's first step ran (then a rerun resumes)
    try:
        return asyncio.run(_run(args, started))
    except Exception as exc:
        return _stopped(exc, debug=args.debug, started=bool(started))


def _stopped(exc: Exception, *, debug: bool, started: bool = True) -> int:
    """Say why the run stopped in one line, advising a rerun only where resuming helps; the exit status.

    With ``--debug`` an unexpected error (or an invalid value, shown as its fields) is raised with
    its traceback instead.
    """
    from pydantic import ValidationError

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
    if isinstance(leaf, ValidationError):
        if debug:
            raise exc
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in leaf.errors())
        print(f"visioncreator: error: invalid {leaf.title}: {fields}", file=sys.stderr)
        return 1
    # A corrupt checkpoint, a bad handle, bad input, an unreachable server: the same command would
    # fail the same way, so no advice to rerun it (each message says what to do instead).
    if isinstance(leaf, GraphError | ValueError) and not isinstance(leaf, PolicyTurnTimeout):
        print(f"visioncreator: error: {leaf}", file=sys.stderr)
        return 1
    if debug:
        raise exc
    # A server died or timed out mid-run: the checkpoint keeps what was done.
    advice = (
        "what finished is checkpointed: run the same command again to resume"
        if started
        else "it stopped before its first step, so nothing was kept"
    )
    print(
        f"visioncreator: error: {type(leaf).__name__}: {leaf}. The run stopped; {advice} "
        "(--debug shows the traceback).",
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
