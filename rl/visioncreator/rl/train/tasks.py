"""The tasks of a training stage: loaded from a task source, and carried whole in GRPO prompts."""

from __future__ import annotations

from typing import Any

from visioncreator.rl.collection.records import CollectTask
from visioncreator.rl.train.config import TaskSource

__all__ = ["load_tasks", "task_of_prompt", "task_prompt"]


def load_tasks(source: TaskSource) -> list[CollectTask]:
    """The tasks a :class:`~visioncreator.rl.train.config.TaskSource` names, as collector tasks.

    Raises:
        ValueError: No task is left after the filters (the message names them).

    """
    from visioncreator.evals import load_suite
    from visioncreator.rl.collection.records import as_collect_task

    wanted, excluded = set(source.ids), set(source.exclude_ids)
    tasks = [
        as_collect_task(t)
        for t in load_suite(source.suite)
        if t.split in source.splits and (not wanted or t.id in wanted) and t.id not in excluded
    ]
    tasks = tasks[: source.limit]
    if not tasks:
        raise ValueError(
            f"no tasks in suite {source.suite or 'built-in'} for splits={list(source.splits)}, "
            f"ids={list(source.ids)}, exclude_ids={list(source.exclude_ids)}"
        )
    return tasks


def task_prompt(task: CollectTask) -> list[dict[str, str]]:
    """The conversational prompt of a GRPO dataset row: one user message holding the task JSON."""
    return [{"role": "user", "content": task.model_dump_json()}]


def task_of_prompt(prompt: Any) -> CollectTask:
    """The task a :func:`task_prompt` prompt carries.

    Raises:
        ValueError: The prompt is not one made by :func:`task_prompt`.

    """
    try:
        return CollectTask.model_validate_json(prompt[-1]["content"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"a GRPO prompt must be task_prompt(task), got {str(prompt)[:200]!r}: {exc}") from exc
