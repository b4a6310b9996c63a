"""``visioncreator train sft|grpo|rpco --config FILE``: train the policy from a configuration file.

Usage::

    visioncreator train sft  --config FILE [--output-dir DIR] [--max-steps N] [--no-resume]
    visioncreator train grpo --config FILE [--observe inspect|image|both] ...
    visioncreator train rpco --config FILE ...

``sft`` and ``grpo`` run the file's stages of that kind, in file order (a GRPO stage after an SFT
stage that finished in an earlier run starts from its model); the file must have at least one.
``rpco`` runs every stage of the file in order; a file without ``stages`` (only ``policy``,
``output_dir``, ``seed``, ``eval_tasks``) gets the RPCO recipe's three stages
(:func:`visioncreator.rl.train.recipe.rpco_stages`).

Re-running the same command resumes: finished stages (``OUTPUT_DIR/NN-NAME/stage.json``) are
skipped and an interrupted stage continues from its latest checkpoint. ``--no-resume`` trains
every selected stage again from its start model.

Progress goes to stderr: one line per stage start and end, one per logged step (step, loss,
reward, steps per second and time left), one per held-out evaluation; on a terminal a bar per
stage shows the steps as well. Exit status: 0 done, 2 bad configuration (the message
names the file and the field), 1 the training failed. ``python -m visioncreator.rl.train`` runs it too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

from visioncreator.graph import CommandParser, Progress, format_eta, in_range
from visioncreator.rl.train.config import ConfigError, TrainConfig, load_train_config

__all__ = ["TRAINING_PACKAGES", "build_parser", "main", "missing_training_packages"]

_PROG = "visioncreator train"


def build_parser() -> argparse.ArgumentParser:
    """The ``visioncreator train`` argument parser."""
    parser = CommandParser(prog=_PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["sft", "grpo", "rpco"], help="Which stages to run (see above).")
    parser.add_argument("--config", required=True, help="Training config, TOML or JSON (required; see configs/).")
    parser.add_argument("--output-dir", help="Override the config's output_dir (default: the config's).")
    parser.add_argument(
        "--max-steps",
        type=in_range(int, 1),
        help="Override every stage's max_steps, for a quick run (default: the config's).",
    )
    parser.add_argument(
        "--observe",
        choices=["inspect", "image", "both"],
        help="Override every GRPO stage's observe: how rollouts show the policy a new image; image/both need a "
        "vision-language policy model, e.g. tiny-vlm (default: the config's).",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="Ignore finished stages and checkpoints: train from scratch."
    )
    parser.add_argument("--debug", action="store_true", help="Show the traceback of a failed training.")
    return parser


def _load(args: argparse.Namespace) -> TrainConfig:
    """The config with the command line's overrides applied; raises ConfigError naming file and field."""
    default_stages = None
    if args.mode == "rpco":
        from visioncreator.rl.train.recipe import rpco_stages

        default_stages = rpco_stages()
    config = load_train_config(args.config, default_stages=default_stages)
    update: dict[str, Any] = {}
    if args.output_dir:
        update["output_dir"] = args.output_dir
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ConfigError(f"{args.config}: --max-steps must be at least 1, got {args.max_steps}")
        update["stages"] = tuple(s.model_copy(update={"max_steps": args.max_steps}) for s in config.stages)
    if args.observe is not None:
        stages = update.get("stages", config.stages)
        update["stages"] = tuple(
            s.model_copy(update={"observe": args.observe}) if s.kind == "grpo" else s for s in stages
        )
    if update:
        config = config.model_copy(update=update)
    if args.mode in ("sft", "grpo") and not any(s.kind == args.mode for s in config.stages):
        kinds = ", ".join(s.kind for s in config.stages)
        raise ConfigError(f"{args.config}: stages: no {args.mode!r} stage to run (the file has: {kinds})")
    return config


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _Printer:
    """Progress events as one line each on stderr; on a terminal, a bar per stage with rate and ETA."""

    def __init__(self, *, bar: bool | None = None) -> None:
        self.started = time.perf_counter()
        self.bar_wanted = sys.stderr.isatty() if bar is None else bar
        self.stage_started = self.started
        self.steps: Progress | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        at = f"[{time.perf_counter() - self.started:7.1f}s]"
        if kind == "stage_start":
            self.stage_started = time.perf_counter()
            line = f"stage {event['index']}/{event['total']} {event['name']} ({event['kind']}) start -> {event['dir']}"
        elif kind == "stage_end":
            self.close()
            line = (
                f"stage {event['index']}/{event['total']} {event['name']} done in {event['wall_s']:.1f}s "
                f"-> {event['model_dir']}"
            )
        elif kind == "stage_skip":
            line = f"stage {event['index']}/{event['total']} {event['name']} already finished, skipped"
        elif kind == "step":
            if "train_runtime" in event:
                return
            line = self._step(event)
        elif kind == "eval":
            line = (
                f"eval after {event['after']}: success {event['success_rate']:.3f} "
                f"mean reward {event['mean_reward']:.3f} (n={event['n']}, {event['wall_s']:.1f}s)"
            )
        else:
            return
        if self.steps is not None and self.steps.is_bar:
            self.steps.write(f"{at} {line}")
        else:
            print(f"{at} {line}", file=sys.stderr, flush=True)

    def _step(self, event: dict[str, Any]) -> str:
        step, total = event.get("step"), event.get("max_steps")
        values = " ".join(
            f"{k}={_fmt(event[k])}" for k in ("loss", "reward", "groups/degenerate") if event.get(k) is not None
        )
        timing = ""
        if isinstance(step, int) and isinstance(total, int) and total > 0:
            if self.steps is None or self.steps.desc != event["stage"]:
                self.close()
                self.steps = Progress(
                    total, desc=str(event["stage"]), unit="step", bar=self.bar_wanted, started_at=self.stage_started
                )
            self.steps.update(max(0, step - self.steps.done))
            eta = self.steps.eta_s()
            if eta is not None:
                timing = f" ({self.steps.rate():.2f} step/s, ETA {format_eta(eta)})"
        return f"{event['stage']} step {step}/{total} {values}".rstrip() + timing

    def close(self) -> None:
        """Finish the current stage's bar."""
        if self.steps is not None:
            self.steps.close()
            self.steps = None


TRAINING_PACKAGES = ("torch", "transformers", "trl", "datasets", "peft")
"""What ``visioncreator train`` imports (the ``rl`` extra)."""


def missing_training_packages() -> list[str]:
    """The packages of :data:`TRAINING_PACKAGES` that cannot be imported here."""
    return [name for name in TRAINING_PACKAGES if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook refused it, or a broken half-installed package
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Train the policy (``train sft|grpo|rpco --config FILE``); exit status 0 ok, 1 failure, 2 bad config."""
    args = build_parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    missing = missing_training_packages()
    if missing:
        print(
            f"{_PROG}: error: training needs the rl extra (missing: {', '.join(missing)}): "
            "pip install 'visioncreator[rl]'",
            file=sys.stderr,
        )
        return 2
    from visioncreator.rl.train.device import is_main_process, process_count, resolve_placement
    from visioncreator.rl.train.models import ModelError
    from visioncreator.rl.train.stages import run_stages

    try:
        placement = resolve_placement(config.policy)
    except ConfigError as exc:
        print(f"{_PROG}: error: {args.config}: {exc}", file=sys.stderr)
        return 2
    main_process = is_main_process(placement)  # under accelerate launch, one process reports
    if main_process:
        print(
            f"{_PROG}: device {placement.device}, dtype {placement.dtype}, {process_count(placement)} process(es)",
            file=sys.stderr,
        )

    kinds = None if args.mode == "rpco" else [cast(Literal["sft", "grpo"], args.mode)]
    printer = _Printer()
    try:
        summary = run_stages(config, kinds=kinds, resume=not args.no_resume, progress=printer if main_process else None)
    except ModelError as exc:
        print(f"{_PROG}: error: {args.config}: policy.model: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(f"{_PROG}: error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        printer.close()
    if main_process:
        print(
            f"{_PROG}: done; final model {summary.final_model}; curves {summary.output_dir}/curves.json",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
