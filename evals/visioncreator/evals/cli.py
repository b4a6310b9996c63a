"""``visioncreator eval``: run a suite into a run folder and report it, or compare two runs.

Usage::

    visioncreator eval --out DIR [--suite FILE] [--policy expert|URL|DIR] [--tools synthetic|tiny|diffusers|URL] ...
    visioncreator eval compare RUN_A RUN_B [--out FILE]

Running again with the same ``--out`` resumes: finished tasks are skipped, a task killed midway
continues from its checkpoint. One eval writes a folder at a time: a second one stops at once,
naming the first one's pid.

Exit codes: 0 done; 1 nothing to run or nothing scored (the message says why); 2 the run could
not start or stopped on an error (message on stderr); 3 the tool server was lost: the tasks it
stopped are recorded as infrastructure errors (never scored) and running the same command again
runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from visioncreator.evals.errors import EvalsError, EvalSettingsError
from visioncreator.evals.results import TaskError, TaskResult
from visioncreator.evals.runner import EvalOutcome, outcome_json, run_eval
from visioncreator.evals.settings import BACKENDS, EvalSettings
from visioncreator.evals.suites import ALLOW_OUTSIDE_FLAG
from visioncreator.graph import (
    AgentConfig,
    Budgets,
    CommandParser,
    FolderLockedError,
    GraphError,
    Progress,
    folder_entries,
    in_range,
    missing_extra,
    remove_new,
)
from visioncreator.policy import ExpertConfig
from visioncreator.tool_servers.synthetic import ObserverSettings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``visioncreator eval`` argument parser."""
    parser = CommandParser(prog="visioncreator eval", description=__doc__.split("\n\n")[0])
    rate = in_range(float, 0.0, 1.0)
    parser.add_argument("--suite", type=Path, help="Suite file (JSONL); default: the built-in synthetic suite.")
    parser.add_argument(
        "--policy", default="expert", help="expert (default), an OpenAI-compatible base URL, or a model directory."
    )
    parser.add_argument(
        "--tools",
        default="synthetic",
        help=f"Tool back end to spawn ({', '.join(BACKENDS)}; default synthetic) or a streamable HTTP URL "
        "(bearer token from $VISIONCREATOR_TOKEN).",
    )
    parser.add_argument("--out", type=Path, required=True, help="Run folder (required; re-use it to resume).")
    parser.add_argument("--label", default="", help="A name for the run in reports (default: none).")
    parser.add_argument("--concurrency", type=in_range(int, 1), default=4, help="Tasks in flight at once.")
    parser.add_argument("--fault-rate", type=rate, default=0.0, help="Synthetic fault injection rate (0-1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every task's run.")
    parser.add_argument(
        "--exact-perception", action="store_true", help="inspect_image reports the ground truth (no observer noise)."
    )
    for name in ("miss", "count", "color", "ocr"):
        parser.add_argument(
            f"--observe-{name}-rate", type=rate, help=f"inspect_image's {name} error rate (default: the server's)."
        )
    parser.add_argument("--no-reflect", action="store_true", help="Switch the reflect node off.")
    parser.add_argument(
        "--max-turns", type=in_range(int, 1), default=Budgets().max_turns, help="Budget: policy turns per task."
    )
    parser.add_argument(
        "--max-tool-calls", type=in_range(int, 1), default=Budgets().max_tool_calls, help="Budget: tool calls per task."
    )
    parser.add_argument(
        "--splits", nargs="+", choices=["single", "multi", "img2img"], help="Only these splits (default: all)."
    )
    parser.add_argument("--limit", type=in_range(int, 0), help="Only the first N tasks, after --splits (default: all).")
    parser.add_argument("--model", help="Served model name when --policy is a URL (default: the server's first).")
    parser.add_argument(
        "--max-tokens", type=in_range(int, 1), default=1024, help="Most tokens per turn of a URL or local policy."
    )
    parser.add_argument("--judge", help="OpenAI-compatible base URL of a vision judge (default: none).")
    parser.add_argument("--judge-model", help="Model name on the judge server (default: its first).")
    parser.add_argument(
        "--judge-mode",
        choices=["image", "text"],
        default="image",
        help="image: send the images (a vision model, default); text: send inspect_image's description of each.",
    )
    parser.add_argument(
        "--tool-latency",
        type=in_range(float, 0.0, 600.0),
        default=0.0,
        help="Simulated seconds per generated image (spawned server).",
    )
    parser.add_argument(
        ALLOW_OUTSIDE_FLAG,
        action="store_true",
        help="Let the suite's input image paths lead outside the suite file's folder (default: such a task is "
        "a load error and nothing is read).",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="If the folder's checkpoints.sqlite is corrupt, move it aside and start the unfinished tasks over "
        "(scored tasks stay done).",
    )
    parser.add_argument("--no-report", action="store_true", help="Do not write summary.json and report.html.")
    parser.add_argument("--quiet", action="store_true", help="No progress bar or lines.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks of unexpected errors.")
    expert = parser.add_argument_group("expert policy error rates (probabilities, 0-1)")
    expert.add_argument("--expert-skip-reflection", type=rate, default=0.0, help="Accept an image without looking.")
    expert.add_argument("--expert-accept-faulty", type=rate, default=0.0, help="Accept a faulty image anyway.")
    expert.add_argument("--expert-bad-plan", type=rate, default=0.0, help="Write a wrong first plan.")
    expert.add_argument("--expert-over-reflect", type=rate, default=0.0, help="Redo a good image needlessly.")
    return parser


def observer_of(args: argparse.Namespace) -> ObserverSettings | None:
    """The observer the flags ask for: exact, the defaults with the rates given replaced, or none (the server's)."""
    if args.exact_perception:
        return ObserverSettings.exact()
    names = ("miss", "count", "color", "ocr")
    given = {f"{n}_rate": getattr(args, f"observe_{n}_rate") for n in names}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    try:
        return dataclasses.replace(ObserverSettings(), **given)
    except (TypeError, ValueError) as exc:
        raise EvalSettingsError(f"--observe-*-rate: {exc}") from exc


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The run settings the parsed flags describe."""
    return EvalSettings(
        out=args.out,
        suite=args.suite,
        policy=args.policy,
        tools=args.tools,
        concurrency=args.concurrency,
        fault_rate=args.fault_rate,
        observer=observer_of(args),
        seed=args.seed,
        agent=AgentConfig(
            reflect=not args.no_reflect, budgets=Budgets(max_turns=args.max_turns, max_tool_calls=args.max_tool_calls)
        ),
        expert=ExpertConfig(
            skip_reflection_rate=args.expert_skip_reflection,
            accept_faulty_rate=args.expert_accept_faulty,
            bad_plan_rate=args.expert_bad_plan,
            over_reflect_rate=args.expert_over_reflect,
        ),
        splits=tuple(args.splits or ()),
        limit=args.limit,
        model=args.model,
        max_tokens=args.max_tokens,
        judge=args.judge,
        judge_model=args.judge_model,
        judge_mode=args.judge_mode,
        label=args.label,
        tool_latency=args.tool_latency,
        allow_outside_inputs=args.allow_outside_inputs,
    )


class _Progress:
    """Tasks done out of those to run, with success so far: a bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.shown: Progress | None = None
        self.done = self.ok = self.failed = 0

    def start(self, todo: int, skipped: int) -> None:
        if skipped and not self.quiet:
            print(f"resuming: {skipped} task(s) already scored, {todo} to run", file=sys.stderr, flush=True)
        self.shown = Progress(todo, desc="eval", unit="task", enabled=not self.quiet)

    def update(self, record: TaskResult | TaskError) -> None:
        self.done += 1
        if isinstance(record, TaskResult):
            self.ok += record.success
        else:
            self.failed += 1
        if self.shown is not None:
            self.shown.update(status={"success": f"{self.ok}/{self.done - self.failed}", "errors": self.failed})

    def close(self) -> None:
        if self.shown is not None:
            self.shown.close()


def _compare(argv: Sequence[str]) -> int:
    parser = CommandParser(prog="visioncreator eval compare", description="Compare two run folders.")
    parser.add_argument("run_a", type=Path, help="The first run folder.")
    parser.add_argument("run_b", type=Path, help="The second run folder.")
    parser.add_argument("--out", type=Path, help="Write the comparison (HTML) here (default: print it).")
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            parser.error(f"{run} is not a run folder")
    from visioncreator.evals.report import compare_runs

    shown = compare_runs(args.run_a, args.run_b, out=args.out)
    print(shown)
    return 0


def _args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments beyond their types, checked before anything starts; None if nothing."""
    if args.out.exists() and not args.out.is_dir():
        return f"argument --out: {args.out} is a file, not a folder: name a run folder (it is created if missing)"
    if args.suite is not None and not args.suite.is_file():
        return f"argument --suite: {args.suite} is not a file"
    if args.tools in ("tiny", "diffusers"):
        problem = missing_extra("diffusers", ("torch", "diffusers", "transformers"))
        if problem:
            return f"argument --tools: {args.tools} {problem}"
    if args.policy != "expert" and not args.policy.startswith(("http://", "https://")):
        if not Path(args.policy).is_dir():
            return (
                f"argument --policy: expected 'expert', an http(s):// base URL or a model folder, got {args.policy!r}"
            )
        problem = missing_extra("llm", ("torch", "transformers"))
        if problem:
            return f"argument --policy: a local model {problem}"
    return None


def _run(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    problem = _args_problem(args)
    if problem:
        fail(problem)
    try:
        settings = settings_from_args(args)
    except EvalSettingsError as exc:
        fail(str(exc))
    progress = _Progress(args.quiet)
    before = folder_entries(settings.out)
    try:
        outcome: EvalOutcome = asyncio.run(
            run_eval(settings, on_start=progress.start, on_done=progress.update, restart=args.restart)
        )
    except Exception as exc:
        if before is None and not progress.done and not isinstance(_leaf(exc), FolderLockedError):
            remove_new(settings.out, before)  # a new folder where no task finished: leave none behind
        if args.debug:
            raise
        if isinstance(exc, EvalsError | GraphError | ValueError | OSError):
            print(f"visioncreator eval: error: {exc}", file=sys.stderr)
        else:
            print(
                f"visioncreator eval: error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr
            )
        return 2
    finally:
        progress.close()
    if outcome.checkpoint_moved_to:
        print(f"--restart: moved the corrupt checkpoint aside to {outcome.checkpoint_moved_to}", file=sys.stderr)
    if outcome.results and not args.no_report:
        from visioncreator.evals.report import write_report

        print(f"report: {write_report(settings.out)}", file=sys.stderr)
    print(outcome_json(outcome))
    if outcome.load_errors or outcome.failed or outcome.infrastructure:
        print(f"errors: see {settings.out / 'errors.jsonl'}", file=sys.stderr)
    if outcome.infrastructure or outcome.not_run:
        print(
            f"visioncreator eval: tool server lost: {outcome.infrastructure + outcome.not_run} task(s) not run "
            f"({outcome.infrastructure} stopped, {outcome.not_run} not started; none scored); "
            "run the same command again to resume them",
            file=sys.stderr,
        )
        return 3
    if not outcome.total:
        print(f"visioncreator eval: {_nothing_selected(args, outcome)}", file=sys.stderr)
        return 1
    return 0 if outcome.results else 1


def _nothing_selected(args: argparse.Namespace, outcome: EvalOutcome) -> str:
    """Why no task was selected: an empty suite, a suite with only bad lines, or the filters."""
    suite = str(args.suite) if args.suite else "the built-in suite"
    if outcome.loaded:
        if args.limit == 0:
            return "no task to run: --limit 0"
        return f"no task matches --splits {' '.join(args.splits)} (suite {suite} has {outcome.loaded} task(s))"
    if outcome.load_errors:
        return f"suite {suite} has no task that loads ({outcome.load_errors} bad line(s): see errors.jsonl)"
    return f"suite {suite} has no tasks"


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run a task suite and report it, or compare two runs (``eval compare A B``); exit codes: module docstring."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["compare"]:
        return _compare(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    return _run(args, parser.error)


if __name__ == "__main__":
    raise SystemExit(main())
