"""The eval report: summary numbers on hand-made results, and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from tests.graph.conftest import make_client
from visioncreator.evals.reflection import classify_reflections
from visioncreator.evals.report import ReportError, Summary, summarize, write_report
from visioncreator.evals.results import (
    JudgeScore,
    ReflectionCategory,
    ReflectionRecord,
    RunInfo,
    TaskCost,
    TaskError,
    TaskResult,
)
from visioncreator.evals.suites import SuiteTask, load_suite
from visioncreator.graph import build_agent, run_task
from visioncreator.graph.offline import expert_policy
from visioncreator.policy import Task
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.checklist import verify

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
IMAGE_TOOLS = {"text_to_image", "edit_image", "reference_to_image"}
MISSING = "img_" + "0" * 24


# ---------------------------------------------------------------- headless Chromium


class _Dom(HTMLParser):
    """The rendered DOM's body attributes, <img> sources and script count."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.images: list[dict[str, str]] = []
        self.scripts = 0
        self.task_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = values
        elif tag == "img":
            self.images.append(values)
        elif tag == "script":
            self.scripts += 1
        elif tag == "div" and "task" in values.get("class", "").split():
            self.task_ids.append(values.get("id", ""))


def render_dom(page: Path, tmp_path: Path) -> _Dom:
    """Load a page from disk in headless Chromium (a new empty profile) and parse the DOM after load.

    ``#all-images`` makes the page load its lazy thumbnails at once, so the load event waits for all.
    """
    home = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}
    proc = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={home / 'profile'}", "--dump-dom",
         page.resolve().as_uri() + "#all-images"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    assert dom.body.get("data-ready") == "1", f"the page's load handler did not run: {proc.stdout[:500]}"
    return dom


# ---------------------------------------------------------------- a run folder from real agent runs


async def _input(store: ImageStore, prompt: str, seed: int) -> tuple[str, Any]:
    generated = await SyntheticBackend(SyntheticSettings(fault_rate=0.0)).text_to_image(
        TextToImageInput(prompt=prompt, seed=seed, width=256, height=256)
    )
    assert generated.truth is not None
    return store.put(generated.image, generated.truth).handle, generated.truth.scene


async def _run_tasks(tasks: list[SuiteTask], run: Path) -> None:
    store = ImageStore(run / "store")
    (run / "trajectories").mkdir(parents=True)
    lines = []
    async with make_client(run / "store", fault_rate=0.5) as tools:
        agent = build_agent(policy=expert_policy(), tools=tools, checkpointer=InMemorySaver())
        for index, task in enumerate(tasks):
            inputs = [await _input(store, i.prompt or "", i.seed) for i in task.inputs]
            request = Task(
                request=task.request, n_images=task.n_images, split=task.split,
                inputs=tuple(h for h, _ in inputs), id=task.id,
            )  # fmt: skip
            with anyio.fail_after(60):
                done = await run_task(agent, request, seed=index, thread_id=task.id)
            calls = done.trajectory.tool_calls
            truths = {h: t.model_dump(mode="json") for h in {c.handle for c in calls if c.handle}
                      if (t := store.truth(h)) is not None}  # fmt: skip
            trajectory = done.trajectory.model_copy(update={"truths": truths})
            answer = trajectory.answer
            scenes = [t.scene for h in answer if (t := store.truth(h)) is not None]
            items = verify(task.checklist, scenes, [s for _, s in inputs]) if len(scenes) == len(answer) else []
            made = trajectory.images_made(by="policy")
            reflections = classify_reflections(trajectory)
            (run / "trajectories" / f"{task.id}.json").write_text(trajectory.model_dump_json())
            result = TaskResult(
                id=task.id, split=task.split, request=task.request,
                success=len(answer) == task.n_images and bool(items) and all(i.passed for i in items),
                checklist_score=sum(i.passed for i in items) / len(task.checklist) if items else 0.0,
                items=items, answer=answer, inputs=[h for h, _ in inputs], termination=trajectory.termination,
                plan=trajectory.plan, reflections=reflections,
                cost=TaskCost(
                    policy_calls=len(trajectory.turns), tool_calls=len(calls),
                    generator_s=sum(c.latency_s for c in made), wall_s=done.wall_s,
                ),
                faults_injected=sum(1 for c in made if truths.get(c.handle or "", {}).get("faults")),
                faults_caught=sum(1 for r in reflections if r.faults_true and r.verdict != "accept"),
                faulty_answers=sum(1 for h in answer if truths.get(h, {}).get("faults")),
                trajectory=f"trajectories/{task.id}.json",
            )  # fmt: skip
            lines.append(result.model_dump_json())
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")


def make_agent_run(run: Path, per_split: int = 2) -> Path:
    """A run folder made by running built-in suite tasks through the real agent and tool server in-process."""
    suite = load_suite()
    tasks = [t for split in ("single", "multi", "img2img") for t in [t for t in suite if t.split == split][:per_split]]
    asyncio.run(_run_tasks(tasks, run))
    info = RunInfo(suite="builtin", policy="expert", tools="synthetic", label="expert <reflect> & co")
    (run / "run.json").write_text(info.model_dump_json())
    error = TaskError(line=7, stage="load", message='unknown split "<triple>"')
    (run / "errors.jsonl").write_text(error.model_dump_json() + "\n")
    return run


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_agent_run(tmp_path_factory.mktemp("agent") / "run")


# ---------------------------------------------------------------- summary numbers


def _reflection(category: ReflectionCategory) -> ReflectionRecord:
    return ReflectionRecord(turn=2, image=None, verdict="accept", category=category)


def _write_known_run(run: Path) -> None:
    stale = TaskResult(id="s1", split="single", request="r", success=False, checklist_score=0.0)
    s1 = TaskResult(
        id="s1", split="single", request="two cats", success=True, checklist_score=1.0,
        cost=TaskCost(policy_calls=4, prompt_tokens=100, completion_tokens=50, tool_calls=3, generator_s=0.5,
                      wall_s=2.0),
        reflections=[_reflection("good"), _reflection("under")], faults_injected=2, faults_caught=1,
        judge=[JudgeScore(image="img_a", semantic_consistency=8, perceptual_quality=6, overall=7,
                          checklist={"two cats": True, "red": False})],
        unreflected=1, unreflected_faulty=1, answer=[MISSING],
    )  # fmt: skip
    s2 = TaskResult(
        id="s2", split="single", request="a dog", success=False, checklist_score=0.5, termination="budget",
        cost=TaskCost(policy_calls=2, prompt_tokens=10, completion_tokens=10, tool_calls=1, generator_s=0.1,
                      wall_s=1.0),
        reflections=[_reflection("over")], faulty_answers=1,
        judge=[JudgeScore(image="img_b", error="HTTP 500")],
    )  # fmt: skip
    m1 = TaskResult(
        id="m1", split="multi", request="a story", success=True, checklist_score=1.0, termination="answered",
        cost=TaskCost(policy_calls=6, tool_calls=5, wall_s=3.0), reflections=[_reflection("unknown")],
    )  # fmt: skip
    # multi first and a stale s1 record: tables still list single first, and the last s1 record wins.
    lines = [m1, stale, s1, s2]
    (run / "results.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in lines))
    errors = [TaskError(line=3, stage="load", message="bad"), TaskError(id="x", stage="run", message="boom")]
    (run / "errors.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in errors))
    (run / "run.json").write_text(RunInfo(suite="s.jsonl", policy="expert", tools="synthetic").model_dump_json())


def test_summary_numbers_on_known_results(tmp_path: Path) -> None:
    _write_known_run(tmp_path)
    summary = summarize(tmp_path)
    assert list(summary.splits) == ["single", "multi"]
    single, multi, overall = summary.splits["single"], summary.splits["multi"], summary.overall
    assert (single.tasks, single.successes, single.success_rate, single.checklist_mean) == (2, 1, 0.5, 0.75)
    assert single.cost.mean.model_dump() == pytest.approx(
        {"policy_calls": 3, "prompt_tokens": 55, "completion_tokens": 30, "tokens": 85, "tool_calls": 2,
         "generator_s": 0.3, "policy_s": 0, "wall_s": 1.5}
    )  # fmt: skip
    assert single.cost.total.tokens == 170
    assert single.reflections.counts == {"good": 1, "under": 1, "over": 1, "unknown": 0}
    assert single.reflections.fractions["over"] == pytest.approx(1 / 3)
    assert (single.reflections.unreflected, single.reflections.unreflected_faulty) == (1, 1)
    assert single.faults.model_dump() == {"injected": 2, "caught": 1, "catch_rate": 0.5, "faulty_answers": 1}
    assert single.judge is not None
    assert single.judge.model_dump() == {
        "images": 2, "errors": 1, "semantic_consistency": 8.0, "perceptual_quality": 6.0, "overall": 7.0,
        "checklist_yes": 0.5,
    }  # fmt: skip
    assert single.terminations == {"budget": 1, "unknown": 1}
    assert multi.judge is None
    assert multi.faults.catch_rate is None
    assert multi.reflections.fractions == {"good": 0, "under": 0, "over": 0, "unknown": 1.0}
    assert (overall.split, overall.tasks, overall.successes) == ("all", 3, 2)
    assert overall.success_rate == pytest.approx(2 / 3)
    assert overall.checklist_mean == pytest.approx(2.5 / 3)
    assert overall.cost.total.wall_s == pytest.approx(6.0)
    assert overall.reflections.total == 4
    assert (summary.errors, summary.errors_by_stage) == (2, {"load": 1, "run": 1})
    assert summary.run is not None
    assert summary.run.suite == "s.jsonl"


def test_write_report_writes_a_summary_that_round_trips(tmp_path: Path) -> None:
    _write_known_run(tmp_path)
    page = write_report(tmp_path)
    assert page == tmp_path / "report.html"
    written = Summary.model_validate_json((tmp_path / "summary.json").read_text())
    assert written.model_dump(exclude={"created_at"}) == summarize(tmp_path).model_dump(exclude={"created_at"})
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "checklist.png", "cost.png", "judge.png", "reflections.png", "scores.png",
    ]  # fmt: skip
    text = page.read_text()
    # An answer image the run folder does not hold is a placeholder, not a broken <img>.
    assert text.count("not in store") == 1
    assert text.count("<img") == text.count('class="plot"') == 5


def test_an_empty_run_reports_zeros(tmp_path: Path) -> None:
    page = write_report(tmp_path)
    summary = Summary.model_validate_json((tmp_path / "summary.json").read_text())
    assert (summary.overall.tasks, summary.overall.success_rate, summary.splits, summary.run) == (0, 0.0, {}, None)
    assert "No results to plot" in page.read_text()


def test_bad_run_folders_give_errors_that_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        summarize(tmp_path / "nowhere")
    (tmp_path / "errors.jsonl").write_text(TaskError(stage="run", message="x").model_dump_json() + "\n{oops\n")
    with pytest.raises(ReportError, match=r"errors\.jsonl: line 2 is not a TaskError"):
        summarize(tmp_path)
    (tmp_path / "errors.jsonl").unlink()
    (tmp_path / "results.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ReportError, match=r"results\.jsonl: line 1 is not a TaskResult"):
        summarize(tmp_path)


# ---------------------------------------------------------------- the page, in Chromium


def test_report_of_a_real_run_renders_with_its_images_and_plots(agent_run: Path, tmp_path: Path) -> None:
    page = write_report(agent_run)
    summary = json.loads((agent_run / "summary.json").read_text())
    assert summary["overall"]["tasks"] == 6
    assert list(summary["splits"]) == ["single", "multi", "img2img"]
    assert summary["overall"]["reflections"]["total"] > 0
    assert summary["errors"] == 1

    dom = render_dom(page, tmp_path)
    plots = [i for i in dom.images if i.get("class") == "plot"]
    thumbs = [i for i in dom.images if i.get("class") != "plot"]
    assert len(plots) == 4  # scores, reflections, cost, checklist (no judge in this run)
    assert all(i["src"].startswith("data:image/png;base64,") for i in plots)
    results = [json.loads(line) for line in (agent_run / "results.jsonl").read_text().splitlines()]
    expected = sum(
        len(r["inputs"]) + len(r["answer"]) + sum(1 for x in r["reflections"] if x["image"]) for r in results
    )
    assert len(thumbs) == expected
    assert all(i["src"].startswith("thumbs/") for i in thumbs)
    assert dom.body["data-images-total"] == str(len(dom.images))
    assert dom.body["data-images-loaded"] == str(len(dom.images))
    assert dom.body["data-images-broken"] == "0"
    assert dom.body["data-plots-loaded"] == "4"
    assert len(dom.task_ids) == 6
    assert dom.scripts == 1

    # The page keeps working when the whole folder moves; without its image folders it says so.
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(agent_run, moved)
    dom = render_dom(moved / "report.html", tmp_path)
    assert dom.body["data-images-loaded"] == str(len(dom.images))
    shutil.rmtree(moved / "thumbs")
    dom = render_dom(moved / "report.html", tmp_path)
    assert dom.body["data-images-broken"] == str(expected)
    assert dom.body["data-images-loaded"] == "4"


def test_report_escapes_every_string(tmp_path: Path) -> None:
    hostile = '<script>document.body.dataset.pwned="1"</script><img src=x onerror="alert(1)">'
    result = TaskResult(
        id='t"1<b>', split="<single>", request=hostile, success=False, checklist_score=0.0,
        termination=hostile, plan={"steps": [{"step": 1, "goal": hostile, "tool": "<t>", "prompt": hostile}]},
        reflections=[ReflectionRecord(turn=1, image=None, verdict="<v>", faults_listed=[hostile], category="unknown",
                                      reason=hostile)],
        answer=["img_<not a handle>"],
    )  # fmt: skip
    (tmp_path / "results.jsonl").write_text(result.model_dump_json() + "\n")
    info = RunInfo(suite=hostile, policy=hostile, tools="t", label=hostile, settings={"x": hostile})
    (tmp_path / "run.json").write_text(info.model_dump_json())
    page = write_report(tmp_path)
    assert hostile not in page.read_text()
    dom = render_dom(page, tmp_path)
    assert dom.scripts == 1
    assert "data-pwned" not in dom.body
    assert [i for i in dom.images if i.get("class") != "plot"] == []  # the bad handle is a placeholder
    assert dom.task_ids == ['task-t"1<b>']
