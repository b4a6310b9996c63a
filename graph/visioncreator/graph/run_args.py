"""The flags of ``visioncreator run`` (argparse only: the defaults it quotes load with the parser)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from visioncreator.graph.arguments import HelpFormatter, in_range, missing_extra

__all__ = ["EXIT_BUSY", "MAX_IMAGES", "RUN_HELP", "add_run_parser", "run_args_problem"]

EXIT_BUSY = 75
"""Exit status of a ``run`` whose ``--out`` another run holds (``EX_TEMPFAIL``: try again later)."""

_EPILOG = f"""\
Files: everything the run writes stays under --out (images/<handle>.png, image_N.png,
trajectory.json, report.html, checkpoints.sqlite, clock.json (the running time of the
task's runs so far), and store/ for a spawned tool server);
--checkpoint, --store and --tool-log may name files elsewhere. One run at a time per --out:
a second run on the same folder stops at once (the lock is on --out, even when --checkpoint
points elsewhere).

A run that stops before its first step leaves nothing behind (no folder, no file in an existing one).

Exit status: 0 the answer holds an image; 1 an error, or no image in the answer; 2 bad arguments
(one line naming the option; a missing extra names the pip install);
{EXIT_BUSY} another run holds --out (EX_TEMPFAIL: try again when it has finished).
"""


_REVIEW_HELP = (
    "Pause after each reflect turn for your review at the terminal: answer approve, redo <note> or "
    "revise <plan JSON> on standard input (end of input leaves the run paused; rerun to resume)."
)

MAX_IMAGES = 16
"""The most images one task's answer may hold (``--n``)."""

MAX_REQUEST_CHARS = 4000
"""The longest request, in characters (the task's own limit)."""

MAX_TOOL_LATENCY_S = 600.0
"""The longest simulated latency the tool server accepts (``--tool-latency``)."""

RUN_HELP = "Run one task on the offline default (synthetic tools, expert policy)."


def add_run_parser(sub: Any) -> None:
    """Add the ``run`` subcommand with all its flags to ``sub`` (an argparse subparsers action)."""
    from visioncreator.graph.config import AgentConfig, Budgets, RetrySettings

    run = sub.add_parser(
        "run",
        help=RUN_HELP,
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    run.add_argument("prompt", type=_request, help="The request, in words.")
    run.add_argument(
        "--image", action="append", metavar="FILE", help="Input image (repeat for several; default: none, from text)."
    )
    run.add_argument("--n", type=in_range(int, 1, MAX_IMAGES), default=1, help="How many images the answer must hold.")
    run.add_argument("--split", choices=["single", "multi", "img2img"], help="Task kind (inferred by default).")
    run.add_argument("--out", required=True, help="Output folder (required; created when the run starts).")
    run.add_argument("--seed", type=int, default=0, help="Seed of the run.")
    run.add_argument(
        "--policy",
        default="expert",
        help="expert (the scripted teacher, default), an OpenAI-compatible base URL such as "
        "http://127.0.0.1:8000/v1 (vLLM), or a local Hugging Face model directory.",
    )
    run.add_argument("--model", help="Served model name when --policy is a URL (default: the server's first).")
    run.add_argument(
        "--max-tokens", type=in_range(int, 1), default=1024, help="Most tokens per turn of a URL or local policy."
    )
    run.add_argument(
        "--policy-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help=f"Longest policy turn (default {AgentConfig().policy_timeout_s:g} s); for a URL policy also "
        "the timeout of each HTTP request (default: the policy's own, 120 s).",
    )
    run.add_argument(
        "--policy-retries",
        type=in_range(int, 0),
        metavar="N",
        help=f"Retries after a failed first attempt: of a policy turn whose model server is unreachable "
        f"(default {RetrySettings().max_attempts - 1}), and for a URL policy of each HTTP request on connection "
        "errors and HTTP 5xx (default: the policy's own, 3).",
    )
    run.add_argument(
        "--max-turns", type=in_range(int, 1), default=Budgets().max_turns, help="Budget: policy turns per task."
    )
    run.add_argument(
        "--max-tool-calls", type=in_range(int, 1), default=Budgets().max_tool_calls, help="Budget: tool calls per task."
    )
    run.add_argument(
        "--observe",
        choices=["inspect", "image", "both"],
        default="inspect",
        help="How the policy sees new images: inspect_image's report (text models), the image (VLMs), or both.",
    )
    run.add_argument(
        "--fault-rate", type=in_range(float, 0.0, 1.0), default=0.0, help="Synthetic fault injection rate (0-1)."
    )
    run.add_argument("--no-reflect", action="store_true", help="Switch the reflect node off.")
    run.add_argument("--review", action="store_true", help=_REVIEW_HELP)
    _add_tool_server_flags(run)


def _add_tool_server_flags(run: argparse.ArgumentParser) -> None:
    """The flags of the tool server (spawned or reached), the checkpoint and the output."""
    run.add_argument(
        "--tools-url",
        help="Use a running tool server (streamable HTTP URL) instead of spawning one; "
        "the bearer token, if any, comes from $VISIONCREATOR_TOKEN (default: spawn one).",
    )
    run.add_argument("--store", help="Image store folder for the spawned tool server (default OUT/store).")
    run.add_argument(
        "--backend",
        choices=["synthetic", "tiny", "diffusers"],
        default="synthetic",
        help="Image back end of the spawned tool server: synthetic (default, with ground truth), tiny (random "
        "diffusers pipelines, CPU) or diffusers (the models of the registry; needs the diffusers extra).",
    )
    run.add_argument(
        "--tool-latency",
        type=in_range(float, 0.0, MAX_TOOL_LATENCY_S),
        default=0.0,
        help="Simulated seconds per generated image.",
    )
    run.add_argument(
        "--tool-log", help="Spawned tool server appends a JSON line per generated image here (default: none)."
    )
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
    run.add_argument("--debug", action="store_true", help="Show tracebacks of unexpected errors.")


def _request(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must say what to make, in words; got a blank request")
    if len(text) > MAX_REQUEST_CHARS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_REQUEST_CHARS} characters, got {len(text)}")
    return text


def run_args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with parsed ``run`` arguments beyond their own types, as one line; None if nothing.

    Checked before anything starts: the input files are read (into ``args.image_bytes``), ``--out``
    is checked without being created, and the extras the back end and the policy need are looked up.
    """
    try:
        args.image_bytes = [Path(p).read_bytes() for p in args.image or []]
    except OSError as exc:
        return f"argument --image: cannot read {exc.filename}: {exc.strerror or exc}"
    problem = _out_problem(Path(args.out))
    if problem:
        return f"argument --out: {problem}"
    policy = args.policy
    if policy != "expert" and not policy.startswith(("http://", "https://")):
        if not Path(policy).is_dir():
            return (
                f"argument --policy: expected 'expert', an http(s):// base URL or a model folder, "
                f"got {policy!r} (no such folder)"
            )
        problem = missing_extra("llm", ("torch", "transformers"))
        if problem:
            return f"argument --policy: a local model {problem}"
    if args.backend != "synthetic" and not args.tools_url:
        problem = missing_extra("diffusers", ("torch", "diffusers", "transformers"))
        if problem:
            return f"argument --backend: {args.backend} {problem}"
    return None


def _out_problem(out: Path) -> str | None:
    """Why ``out`` cannot become the run's folder; nothing is created."""
    if out.exists():
        if not out.is_dir():
            return f"{out} is a file, not a folder: name a folder (it is created when the run starts)"
        return None if os.access(out, os.W_OK | os.X_OK) else f"{out}: the folder is not writable"
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {out}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {out}: {parent} is not writable"
    return None


def _positive_float(text: str) -> float:
    value = in_range(float, 0.0)(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number more than 0, got {text}")
    return value
