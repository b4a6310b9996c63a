"""The flags of ``visioncreator run`` (argparse only: the defaults it quotes load with the parser)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["EXIT_BUSY", "RUN_HELP", "add_run_parser"]

EXIT_BUSY = 75
"""Exit status of a ``run`` whose ``--out`` another run holds (``EX_TEMPFAIL``: try again later)."""

_EPILOG = f"""\
Files: everything the run writes stays under --out (images/<handle>.png, image_N.png,
trajectory.json, report.html, checkpoints.sqlite, and store/ for a spawned tool server);
--checkpoint, --store and --tool-log may name files elsewhere. One run at a time per --out:
a second run on the same folder stops at once (the lock is on --out, even when --checkpoint
points elsewhere).

Exit status: 0 the answer holds an image; 1 an error, or no image in the answer; 2 bad arguments;
{EXIT_BUSY} another run holds --out (EX_TEMPFAIL: try again when it has finished).
"""


_REVIEW_HELP = (
    "Pause after each reflect turn for your review at the terminal: answer approve, redo <note> or "
    "revise <plan JSON> on standard input (end of input leaves the run paused; rerun to resume)."
)

RUN_HELP = "Run one task on the offline default (synthetic tools, expert policy)."


def add_run_parser(sub: Any) -> None:
    """Add the ``run`` subcommand with all its flags to ``sub`` (an argparse subparsers action)."""
    from visioncreator.graph.config import AgentConfig, Budgets, RetrySettings

    run = sub.add_parser(
        "run",
        help=RUN_HELP,
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
    run.add_argument("--review", action="store_true", help=_REVIEW_HELP)
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
