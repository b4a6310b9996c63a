"""The eval runner on the real agent, expert and synthetic tool server (a stdio subprocess)."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig

from visioncreator.evals import EvalSettings, EvalSettingsError, load_suite, run_eval, write_suite
from visioncreator.evals.results import ERRORS_FILE, RESULTS_FILE, RUN_FILE, RunInfo, TaskError, read_results
from visioncreator.evals.runner import task_cost
from visioncreator.graph import (
    AgentConfig,
    AgentInput,
    Timings,
    ToolCallRecord,
    ToolClient,
    ToolServerSpec,
    Trajectory,
    TurnRecord,
    build_agent,
    expert_policy,
    open_checkpointer,
    thread_id_for,
)
from visioncreator.policy import ExpertConfig, Task
from visioncreator.tool_servers.synthetic import ObserverSettings

TIMEOUT_S = 120


def _suite(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two good tasks, a line that is not JSON, an unknown split, an input file that is no image, a good edit."""
    builtin = load_suite()
    single = [t for t in builtin if t.split == "single"][:2]
    edit = next(t for t in builtin if t.split == "img2img")
    path = tmp_path / "suite.jsonl"
    write_suite(single, path)
    broken = edit.model_dump(mode="json", exclude_defaults=True)
    broken.update(id="broken-input", inputs=[{"path": "not-an-image.png"}], checklist=[])
    (tmp_path / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    bad_split = {**single[0].model_dump(mode="json", exclude_defaults=True), "id": "x", "split": "video"}
    with path.open("a") as f:
        f.write('{"id": "half", "split": \n')
        f.write(json.dumps(bad_split) + "\n")
        f.write(json.dumps(broken) + "\n")
        f.write(edit.model_dump_json(exclude_defaults=True) + "\n")
    return path, [single[0].id, single[1].id, edit.id]


async def test_a_run_scores_the_good_tasks_records_every_error_and_resumes_without_rescoring(tmp_path: Path) -> None:
    suite, good = _suite(tmp_path)
    settings = EvalSettings(out=tmp_path / "run", suite=suite, fault_rate=0.3, concurrency=2)
    async with asyncio.timeout(TIMEOUT_S):
        outcome = await run_eval(settings)
    assert (outcome.total, outcome.ran, outcome.failed, outcome.load_errors) == (4, 3, 1, 2)
    results = read_results(settings.out)
    assert sorted(r.id for r in results) == sorted(good)
    for result in results:
        assert result.scorer == "synthetic"
        assert result.items
        assert 0.0 <= result.checklist_score <= 1.0
        assert result.termination == "answered"
        assert result.cost.policy_calls >= 3
        assert result.cost.tool_calls >= 2
        assert min(result.cost.generator_s, result.cost.wall_s, result.cost.policy_s) > 0
        assert result.reflections
        assert all(r.category != "unknown" for r in result.reflections)
        trajectory = Trajectory.model_validate_json((settings.out / result.trajectory).read_text())
        assert trajectory.answer == result.answer
    edit = next(r for r in results if r.split == "img2img")
    assert len(edit.inputs) == 1

    errors = [TaskError.model_validate_json(line) for line in (settings.out / ERRORS_FILE).read_text().splitlines()]
    by_line = {e.line or 0: e for e in errors if e.stage == "load"}
    assert sorted(by_line) == [3, 4]
    assert "line 3" in by_line[3].message
    assert "unknown split 'video'" in by_line[4].message
    (crash,) = [e for e in errors if e.stage == "run"]
    assert crash.id == "broken-input"
    assert "not-an-image.png" in crash.message
    info = RunInfo.model_validate_json((settings.out / RUN_FILE).read_text())
    assert info.settings["fault_rate"] == 0.3
    assert info.policy == "expert"

    before = (settings.out / RESULTS_FILE).read_text()
    async with asyncio.timeout(TIMEOUT_S):
        again = await run_eval(settings)
    assert (again.skipped, again.ran, again.failed, again.results) == (3, 0, 1, 3)
    assert (settings.out / RESULTS_FILE).read_text() == before
    errors_after = (settings.out / ERRORS_FILE).read_text().splitlines()
    assert sum('"stage":"load"' in line for line in errors_after) == 2  # load errors are not repeated


async def test_a_task_stopped_mid_trajectory_resumes_without_redoing_finished_tool_calls(tmp_path: Path) -> None:
    task = next(t for t in load_suite() if t.split == "multi")
    suite = tmp_path / "suite.jsonl"
    write_suite([task], suite)
    settings = EvalSettings(out=tmp_path / "run", suite=suite, concurrency=1)
    # The first part of the run, as a killed process leaves it: checkpoints up to the first images.
    spec = ToolServerSpec.synthetic(store=str(settings.out / "store"), extra_args=("--backend", "synthetic"))
    agent_task = Task(request=task.request, n_images=task.n_images, split=task.split, id=task.id)
    tid = thread_id_for(agent_task, settings.seed)  # the thread the run will resume
    config: RunnableConfig = {"configurable": {"thread_id": tid}, "recursion_limit": 100}
    async with (
        asyncio.timeout(TIMEOUT_S),
        ToolClient(spec=spec) as tools,
        open_checkpointer(settings.out / "checkpoints.sqlite") as saver,
    ):
        agent = build_agent(policy=expert_policy(ExpertConfig(seed=0)), tools=tools, checkpointer=saver)
        start: AgentInput = {"task": agent_task.model_dump(mode="json"), "seed": settings.seed}
        stream = agent.astream(start, config, durability="sync")
        async with aclosing(stream) as updates:  # type: ignore[type-var]
            async for update in updates:
                if "tools" in update:
                    break
        snapshot = await agent.aget_state(config)
    # Stopped before the end: a step left to run, or one whose writes are saved but not yet its checkpoint.
    assert snapshot.next or snapshot.tasks, "the partial run must stop before the end"
    done_calls = [(c.id, c.started_at) for c in snapshot.values["tool_calls"]]
    assert done_calls

    async with asyncio.timeout(TIMEOUT_S):
        outcome = await run_eval(settings)
    assert outcome.ran == 1
    (result,) = read_results(settings.out)
    trajectory = Trajectory.model_validate_json((settings.out / result.trajectory).read_text())
    assert trajectory.config["resumed"] is True
    final_calls = [(c.id, c.started_at) for c in trajectory.tool_calls]
    assert final_calls[: len(done_calls)] == done_calls  # the same records: not made again
    assert len({i for i, _ in final_calls}) == len(final_calls)
    assert len(result.answer) == task.n_images


async def test_a_folder_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    write_suite(load_suite()[:1], suite)
    async with asyncio.timeout(TIMEOUT_S):
        await run_eval(EvalSettings(out=tmp_path / "run", suite=suite, concurrency=1))
        with pytest.raises(EvalSettingsError, match=r"other settings \(fault_rate, reflect\)"):
            await run_eval(
                EvalSettings(out=tmp_path / "run", suite=suite, fault_rate=0.5, agent=AgentConfig(reflect=False))
            )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"fault_rate": 1.5}, "fault rate"),
        ({"tools": "gpu-magic"}, "--tools 'gpu-magic'"),
        ({"limit": -1}, "limit"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EvalSettingsError, match=message):
        EvalSettings(out=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_cost_counts_tokens_tool_calls_and_generator_time() -> None:
    turns = [
        TurnRecord(
            index=0, node="plan", text="", latency_s=0.5, prompt_token_ids=(1, 2, 3), completion_token_ids=(4, 5)
        ),
        TurnRecord(index=1, node="act", text="", latency_s=0.25),
    ]
    calls = [
        ToolCallRecord(id=name, batch=1, turn=1, by=by, name=name, ok=True, handle=f"img_{k}", latency_s=latency)
        for k, (name, by, latency) in enumerate(
            [("text_to_image", "policy", 2.0), ("inspect_image", "graph", 0.5), ("edit_image", "policy", 1.0)]
        )
    ]
    trajectory = Trajectory(
        thread_id="t", seed=0, task=Task(request="x"), messages=[], turns=turns, tool_calls=calls, answer=[],
        termination="answered", timings=Timings(wall_s=9.0, policy_s=0.75, tools_s=3.5),
    )  # fmt: skip
    cost = task_cost(trajectory)
    assert cost.model_dump() == {
        "policy_calls": 2, "prompt_tokens": 3, "completion_tokens": 2, "tool_calls": 3, "generator_s": 3.0,
        "policy_s": 0.75, "wall_s": 9.0,
    }  # fmt: skip


async def test_expert_does_not_redo_clean_panels_over_a_secondary_object_of_another_colour(tmp_path: Path) -> None:
    # Regression: in these built-in tasks a later panel asks for the secondary object (a cup, an
    # umbrella) in another colour than the first panel. Only the main subject must stay the same
    # (the checklist's consistency items), so a clean panel must be accepted, not redone.
    chosen = [t for t in load_suite() if t.id in ("multi-006", "multi-012")]
    write_suite(chosen, tmp_path / "suite.jsonl")
    # Exact perception: a misread the noisy observer draws (an OCR slip) is a legitimate redo,
    # and not what this regression is about.
    settings = EvalSettings(
        out=tmp_path / "run",
        suite=tmp_path / "suite.jsonl",
        fault_rate=0.3,
        seed=0,
        observer=ObserverSettings.exact(),
    )
    async with asyncio.timeout(TIMEOUT_S):
        await run_eval(settings)
    results = read_results(settings.out)
    assert sorted(r.id for r in results) == ["multi-006", "multi-012"]
    assert all(r.success for r in results)
    reflections = [r for result in results for r in result.reflections]
    assert len(reflections) >= 7
    assert [r for r in reflections if r.category != "good"] == []
