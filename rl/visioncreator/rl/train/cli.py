"""``visioncreator train sft|grpo|rpco --config FILE``: train the policy from a configuration file.

Usage::

    visioncreator train sft  --config FILE [--output-dir DIR] [--max-steps N] [--no-resume]
    visioncreator train grpo --config FILE ...
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
reward), one per held-out evaluation. Exit status: 0 done, 2 bad configuration (the message
names the file and the field), 1 the training failed. ``python -m visioncreator.rl.train`` runs it too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

from visioncreator.rl.train.config import ConfigError, TrainConfig, load_train_config

__all__ = ["TRAINING_PACKAGES", "build_parser", "main", "missing_training_packages"]

_PROG = "visioncreator train"


def build_parser() -> argparse.ArgumentParser:
    """The ``visioncreator train`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=_PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["sft", "grpo", "rpco"], help="Which stages to run (see above).")
    parser.add_argument("--config", required=True, help="Training config, TOML or JSON (see configs/).")
    parser.add_argument("--output-dir", help="Override the config's output_dir.")
    parser.add_argument("--max-steps", type=int, help="Override every stage's max_steps (a quick run).")
    parser.add_argument(
        "--no-resume", action="store_true", help="Ignore finished stages and checkpoints: train from scratch."
    )
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
    if update:
        config = config.model_copy(update=update)
    if args.mode in ("sft", "grpo") and not any(s.kind == args.mode for s in config.stages):
        kinds = ", ".join(s.kind for s in config.stages)
        raise ConfigError(f"{args.config}: stages: no {args.mode!r} stage to run (the file has: {kinds})")
    return config


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _Printer:
    """Progress events as one line each on stderr."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        at = f"[{time.perf_counter() - self.started:7.1f}s]"
        if kind == "stage_start":
            line = f"stage {event['index']}/{event['total']} {event['name']} ({event['kind']}) start -> {event['dir']}"
        elif kind == "stage_end":
            line = (
                f"stage {event['index']}/{event['total']} {event['name']} done in {event['wall_s']:.1f}s "
                f"-> {event['model_dir']}"
            )
        elif kind == "stage_skip":
            line = f"stage {event['index']}/{event['total']} {event['name']} already finished, skipped"
        elif kind == "step":
            if "train_runtime" in event:
                return
            values = " ".join(
                f"{k}={_fmt(event[k])}" for k in ("loss", "reward", "groups/degenerate") if event.get(k) is not None
            )
            line = f"{event['stage']} step {event.get('step')}/{event.get('max_steps')} {values}".rstrip()
        elif kind == "eval":
            line = (
                f"eval after {event['after']}: success {event['success_rate']:.3f} "
                f"mean reward {event['mean_reward']:.3f} (n={event['n']}, {event['wall_s']:.1f}s)"
            )
        else:
            return
        print(f"{at} {line}", file=sys.stderr, flush=True)


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
    from visioncreator.rl.train.models import ModelError
    from visioncreator.rl.train.stages import run_stages

    kinds = None if args.mode == "rpco" else [cast(Literal["sft", "grpo"], args.mode)]
    try:
        summary = run_stages(config, kinds=kinds, resume=not args.no_resume, progress=_Printer())
    except ModelError as exc:
        print(f"{_PROG}: error: {args.config}: policy.model: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"{_PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{_PROG}: done; final model {summary.final_model}; curves {summary.output_dir}/curves.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
