"""``visioncreator collect``: expert trajectories of a task suite, scored, into a JSONL records file.

Re-running the same command resumes the file (deterministic trajectory ids). On more than one CPU
the trajectories run on a pool of worker processes, one per CPU (``--workers N``; ``--workers 1``
is one event loop in this process), ``--concurrency`` of them in flight over the whole pool;
``--ray ADDRESS`` runs the workers on Ray instead (``local`` starts a local cluster). Branched
rollouts (``--branch-at``) run in one process. ``python -m visioncreator.rl.collection`` runs it too.
One collection writes a records file at a time: a second one into the same file stops at once,
naming the first one's pid.

Exit codes: 0 done; 2 the collection could not start or a trajectory failed (message on stderr; the
records already written stay); 3 the tool server was lost: nothing of the interrupted trajectories is
recorded, and running the same command again collects what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from visioncreator.evals import EvalsError, SuiteTask, load_suite
from visioncreator.graph import CommandParser, GraphError, in_range
from visioncreator.rl.collection.collector import synthetic_tools
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.pool import PoolSettings, collect_pool_to, default_workers
from visioncreator.rl.collection.records import TrajectoryRecord
from visioncreator.rl.collection.run import CollectOutageError, collect_to_locked, records_lock
from visioncreator.rl.collection.workers import PolicySpec
from visioncreator.rl.errors import RLError


def _bounded(kind: type[int] | type[float], field: FieldInfo) -> Callable[[str], Any]:
    """An argparse type for ``kind`` within the field's own bounds (its ``ge``/``gt``/``le``)."""
    low: Any = None
    high: Any = None
    above: Any = None
    for bound in field.metadata:
        low = getattr(bound, "ge", low)
        above = getattr(bound, "gt", above)
        high = getattr(bound, "le", high)
    base = in_range(kind, low if above is None else above, high)
    if above is None:
        return base

    def convert(text: str) -> Any:
        value = base(text)
        if value == above:
            raise argparse.ArgumentTypeError(f"must be a number more than {above:g}, got {text}")
        return value

    return convert


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="visioncreator collect",
        description="Collect scored expert trajectories of a task suite on the synthetic tools into a JSONL file.",
    )
    parser.add_argument("--suite", help="suite JSONL file (default: the built-in synthetic suite)")
    parser.add_argument(
        "--splits", nargs="*", default=(), help="only these splits: single, multi, img2img (default: all)"
    )
    parser.add_argument("--limit", type=in_range(int, 0), help="at most this many tasks per split (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="records file (JSONL; required); re-running resumes it")
    parser.add_argument("--store", type=Path, help="image store (default: OUT's folder / store)")
    parser.add_argument("--checkpoint", type=Path, help="SQLite checkpoint (default: OUT with .sqlite)")
    parser.add_argument(
        "--ray", help="Ray address ('local' starts a local cluster): run workers on Ray (default: no Ray)"
    )
    parser.add_argument(
        "--workers",
        type=in_range(int, 1),
        help="worker processes (default: one per CPU; 1: one event loop in this process); Ray actors with --ray",
    )
    parser.add_argument("--expert", default="{}", help="ExpertConfig fields as JSON, e.g. '{\"bad_plan_rate\": 0.3}'")
    for name, field in CollectConfig.model_fields.items():
        if name in ("store", "checkpoint", "rewards", "policy_id", "observe") or field.annotation is bool:
            continue
        kind: Callable[[str], Any] = str
        if field.annotation is int or field.annotation is float:
            kind = _bounded(int if field.annotation is int else float, field)
        flag = "--" + name.replace("_", "-")
        options = [a for a in get_args(field.annotation) if a is not type(None)] or [field.annotation]
        literal = options[0] if len(options) == 1 and get_origin(options[0]) is Literal else None
        choices = get_args(literal) if literal is not None else None
        described = field.description if field.default is not None else f"{field.description} (default: none)"
        parser.add_argument(flag, dest=name, type=kind, default=field.default, choices=choices, help=described)
    parser.add_argument("--no-reflect", action="store_true", help="turn the reflect node off")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


def _args_problem(options: argparse.Namespace) -> str | None:
    """What is wrong with the arguments beyond their types, before anything starts; None if nothing."""
    from visioncreator.policy import ExpertConfig

    if options.out.is_dir():
        return f"argument --out: {options.out} is a folder: name the records file (JSONL) to write"
    if options.suite is not None and not Path(options.suite).is_file():
        return f"argument --suite: {options.suite} is not a file"
    try:
        options.expert_config = ExpertConfig(**json.loads(options.expert))
    except json.JSONDecodeError as exc:
        return f"argument --expert: not JSON ({exc})"
    except (TypeError, ValueError) as exc:
        return f"argument --expert: {exc}"
    return None


def _suite_tasks(suite: str | None, splits: Sequence[str], limit: int | None) -> list[SuiteTask]:
    """The suite's tasks of ``splits`` (all when empty), at most ``limit`` per split; a bad line is an error."""
    tasks = [t for t in load_suite(suite) if not splits or t.split in splits]
    if limit is None:
        return tasks
    counts: dict[str, int] = {}
    kept = []
    for task in tasks:
        counts[task.split] = counts.get(task.split, 0) + 1
        if counts[task.split] <= limit:
            kept.append(task)
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    """Collect scored expert trajectories of a suite into a JSONL records file (RL data); the exit code."""
    parser = _parser()
    options = parser.parse_args(argv)
    problem = _args_problem(options)
    if problem:
        parser.error(problem)
    try:
        _collect(options)
    except CollectOutageError as exc:
        print(f"visioncreator collect: error: {exc}", file=sys.stderr)
        return 3
    except (RLError, EvalsError, GraphError, ValueError, OSError) as exc:
        if options.debug:
            raise
        print(f"visioncreator collect: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if options.debug:
            raise
        print(
            f"visioncreator collect: error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr
        )
        return 2
    return 0


def _collect(options: Any) -> None:
    from visioncreator.graph import expert_policy
    from visioncreator.policy import ExpertConfig

    out: Path = options.out
    own = {"store", "checkpoint", "reflect"}
    fields = {n: getattr(options, n) for n in CollectConfig.model_fields if hasattr(options, n) and n not in own}
    config = CollectConfig(
        **fields,
        reflect=not options.no_reflect,
        store=options.store or out.parent / "store",
        checkpoint=options.checkpoint or out.with_suffix(".sqlite"),
    )
    expert: ExpertConfig = options.expert_config
    tasks = _suite_tasks(options.suite, options.splits, options.limit)
    spec = PolicySpec(kind="expert", settings=dataclasses.asdict(expert))
    workers = options.workers if options.workers is not None else default_workers()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if options.ray:
        from visioncreator.rl.collection.ray import collect_ray_to

        written = asyncio.run(
            collect_ray_to(
                out, tasks, policy=spec, config=config, address=options.ray, workers=workers, progress=not options.quiet
            )
        )
    elif workers > 1 and config.branch_at is None:
        settings = PoolSettings(workers=workers)
        written = asyncio.run(
            collect_pool_to(out, tasks, policy=spec, config=config, settings=settings, progress=not options.quiet)
        )
    else:

        async def local() -> list[TrajectoryRecord]:
            async with synthetic_tools(config) as tools:
                policy = expert_policy(expert)
                return await collect_to_locked(
                    out, tasks, policy=policy, tools=tools, config=config, progress=not options.quiet
                )

        with records_lock(out):  # before the tool server makes its store: a refused run writes nothing
            written = asyncio.run(local())
    mean = sum(r.rewards.get("total", 0.0) for r in written) / max(1, len(written))
    print(json.dumps({"records": str(out), "written": len(written), "mean_total_reward": round(mean, 4)}))


if __name__ == "__main__":
    raise SystemExit(main())
