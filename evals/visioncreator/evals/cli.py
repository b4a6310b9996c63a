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
from typing import Any, NoReturn

from visioncreator.evals.errors import EvalsError, EvalSettingsError
from visioncreator.evals.results import TaskError, TaskResult
from visioncreator.evals.runner import EvalOutcome, outcome_json, run_eval
from visioncreator.evals.settings import BACKENDS, EvalSettings
from visioncreator.evals.suites import ALLOW_OUTSIDE_FLAG
from visioncreator.graph import AgentConfig, Budgets, GraphError
from visioncreator.policy import ExpertConfig
from visioncreator.tool_servers.synthetic import ObserverSettings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``visioncreator eval`` argument parser."""
    parser = argparse.ArgumentParser(prog="visioncreator eval", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--out", type=Path, required=True, help="Run folder (re-use it to resume).")
    parser.add_argument("--label", default="", help="A name for the run in reports.")
    parser.add_argument("--concurrency", type=int, default=4, help="Tasks in flight at once (default 4).")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="Synthetic fault injection rate (0-1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every task's run.")
    parser.add_argument(
        "--exact-perception", action="store_true", help="inspect_image reports the ground truth (no observer noise)."
    )
    for name in ("miss", "count", "color", "ocr"):
        parser.add_argument(
            f"--observe-{name}-rate", type=float, help=f"inspect_image's {name} error rate (default: the server's)."
        )
    parser.add_argument("--no-reflect", action="store_true", help="Switch the reflect node off.")
    parser.add_argument("--max-turns", type=int, default=Budgets().max_turns, help="Budget: policy turns per task.")
    parser.add_argument(
        "--max-tool-calls", type=int, default=Budgets().max_tool_calls, help="Budget: tool calls per task."
    )
    parser.add_argument("--splits", nargs="+", choices=["single", "multi", "img2img"], help="Only these splits.")
    parser.add_argument("--limit", type=int, help="Only the first N tasks (after --splits).")
    parser.add_argument("--model", help="Served model name when --policy is a URL.")
    parser.add_argument("--max-tokens", type=int, default=1024, help="Most tokens per turn of a URL or local policy.")
    parser.add_argument("--judge", help="OpenAI-compatible base URL of a vision judge (optional).")
    parser.add_argument("--judge-model", help="Model name on the judge server (default: its first).")
    parser.add_argument(
        "--judge-mode",
        choices=["image", "text"],
        default="image",
        help="image: send the images (a vision model, default); text: send inspect_image's description of each.",
    )
    parser.add_argument(
        "--tool-latency", type=float, default=0.0, help="Simulated seconds per generated image (spawned server)."
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
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    expert = parser.add_argument_group("expert policy error rates (probabilities, 0-1)")
    expert.add_argument("--expert-skip-reflection", type=float, default=0.0, help="Accept an image without looking.")
    expert.add_argument("--expert-accept-faulty", type=float, default=0.0, help="Accept a faulty image anyway.")
    expert.add_argument("--expert-bad-plan", type=float, default=0.0, help="Write a wrong first plan.")
    expert.add_argument("--expert-over-reflect", type=float, default=0.0, help="Redo a good image needlessly.")
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
    """A tqdm bar on stderr (tasks done / total, success so far); plain lines without tqdm."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.done = self.ok = self.failed = 0

    def start(self, todo: int, skipped: int) -> None:
        if self.quiet:
            return
        if skipped:
            print(f"resuming: {skipped} task(s) already scored, {todo} to run", file=sys.stderr, flush=True)
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]
        except ImportError:  # the evals extra is not installed: plain lines
            return
        self.bar = tqdm(total=todo, file=sys.stderr, unit="task", dynamic_ncols=True)

    def update(self, record: TaskResult | TaskError) -> None:
        self.done += 1
        if isinstance(record, TaskResult):
            self.ok += record.success
        else:
            self.failed += 1
        if self.quiet:
            return
        scored = self.done - self.failed
        status = {"success": f"{self.ok}/{scored}", "errors": self.failed}
        if self.bar is not None:
            self.bar.set_postfix(status, refresh=False)
            self.bar.update(1)
        else:
            print(f"{self.done} done; success {status['success']}; errors {self.failed}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="visioncreator eval compare", description="Compare two run folders.")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path, help="Write the comparison (HTML) here instead of printing it.")
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            parser.error(f"{run} is not a run folder")
    from visioncreator.evals.report import compare_runs

    shown = compare_runs(args.run_a, args.run_b, out=args.out)
    print(shown)
    return 0


def _run(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    try:
        settings = settings_from_args(args)
    except EvalSettingsError as exc:
        fail(str(exc))
    progress = _Progress(args.quiet)
    try:
        outcome: EvalOutcome = asyncio.run(
            run_eval(settings, on_start=progress.start, on_done=progress.update, restart=args.restart)
        )
    except (EvalsError, GraphError, ValueError, OSError) as exc:
        print(f"visioncreator eval: error: {exc}", file=sys.stderr)
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
