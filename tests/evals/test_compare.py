"""Comparing two eval runs: the text table's deltas, and compare.html rendered in headless Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.evals.test_report import render_dom
from visioncreator.evals.report import ReportError, compare_runs
from visioncreator.evals.results import ReflectionRecord, RunInfo, TaskCost, TaskResult
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.items import CheckItem, CheckResult


async def _render(store: ImageStore, prompt: str, seed: int) -> str:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    generated = await backend.text_to_image(TextToImageInput(prompt=prompt, seed=seed, width=128, height=128))
    return store.put(generated.image, generated.truth).handle


def _result(store: ImageStore, task_id: str, split: str, *, success: bool, score: float, tool_calls: int) -> TaskResult:
    handle = asyncio.run(_render(store, f"a red apple and {task_id}", seed=tool_calls))
    failed = CheckResult(item=CheckItem(check="count", subject="apple", value=2), passed=False, detail="found 1")
    return TaskResult(
        id=task_id, split=split, request=f"request of {task_id}", success=success, checklist_score=score,
        items=[] if success else [failed], answer=[handle], termination="answered",
        cost=TaskCost(policy_calls=tool_calls + 1, tool_calls=tool_calls, wall_s=float(tool_calls)),
        reflections=[ReflectionRecord(turn=2, image=handle, verdict="accept", category="good" if success else "under")],
    )  # fmt: skip


def _write(run: Path, label: str, results: list[TaskResult]) -> None:
    (run / "results.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in results))
    (run / "run.json").write_text(RunInfo(suite="s", policy="expert", tools="synthetic", label=label).model_dump_json())


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    store_a, store_b = ImageStore(a / "store"), ImageStore(b / "store")
    _write(a, "baseline", [
        _result(store_a, "s1", "single", success=True, score=1.0, tool_calls=2),
        _result(store_a, "s2", "single", success=False, score=0.5, tool_calls=4),
        _result(store_a, "m1", "multi", success=True, score=1.0, tool_calls=6),
    ])  # fmt: skip
    _write(b, "candidate", [
        _result(store_b, "i1", "img2img", success=True, score=1.0, tool_calls=1),
        _result(store_b, "m1", "multi", success=True, score=1.0, tool_calls=6),
        _result(store_b, "s2", "single", success=True, score=1.0, tool_calls=2),
        _result(store_b, "s1", "single", success=False, score=0.5, tool_calls=6),
    ])  # fmt: skip
    return a, b


def _row(text: str, split: str, metric: str) -> list[str]:
    for line in text.splitlines():
        cells = line.split()
        if cells[:1] == [split] and " ".join(cells[1:]).startswith(metric + " "):
            return cells[len(metric.split()) + 1 :]
    raise AssertionError(f"no row {split} / {metric} in\n{text}")


def test_text_table_gives_per_split_deltas(runs: tuple[Path, Path]) -> None:
    text = compare_runs(*runs)
    assert text.startswith("A: ")
    assert "(baseline)" in text
    assert "(candidate)" in text
    assert _row(text, "single", "success rate") == ["0.500", "0.500", "+0.000"]
    assert _row(text, "single", "checklist") == ["0.750", "0.750", "+0.000"]
    assert _row(text, "single", "tool calls/task") == ["3.00", "4.00", "+1.00"]
    assert _row(text, "single", "reflections under") == ["0.500", "0.500", "+0.000"]
    assert _row(text, "img2img", "tasks") == ["0", "1", "+1"]
    assert _row(text, "all", "tasks") == ["3", "4", "+1"]
    assert _row(text, "all", "success rate") == ["0.667", "0.750", "+0.083"]
    assert _row(text, "all", "wall s/task") == ["4.000", "3.750", "-0.250"]
    assert "outcome differs: 2 (B succeeds where A fails: 1 [s2]; B fails where A succeeds: 1 [s1])" in text
    assert "only in A: 0; only in B: 1 [i1]" in text
    assert "written:" not in text


def test_compare_html_renders_both_runs_side_by_side(runs: tuple[Path, Path], tmp_path: Path) -> None:
    text = compare_runs(*runs, out=tmp_path / "cmp")
    page = tmp_path / "cmp" / "compare.html"
    assert text.endswith(f"written: {page}")
    dom = render_dom(page, tmp_path)
    # Differing outcomes first (split order, then id), then tasks of one run only, then the unchanged.
    assert dom.task_ids == ["task-s1", "task-s2", "task-i1", "task-m1"]
    answers = 3 + 4
    assert dom.body["data-images-total"] == dom.body["data-images-loaded"] == str(answers)
    assert dom.body["data-images-broken"] == "0"
    html = page.read_text()
    # Deltas are coloured by better or worse: success up is good, wall time down is good, more tool calls bad.
    assert '<td class="ok">+0.083</td>' in html
    assert '<td class="ok">-0.250</td>' in html
    assert '<td class="bad">+1.00</td>' in html
    assert html.count("not in this run") == 1
    assert html.count("found 1") == 2  # the failed item, once per failing side


def test_compare_html_goes_to_a_named_file(runs: tuple[Path, Path], tmp_path: Path) -> None:
    compare_runs(*runs, out=tmp_path / "x" / "ab.html")
    assert (tmp_path / "x" / "ab.html").is_file()
    # Seven answers, six images: m1's answer is the same image (same handle) in both runs.
    assert len(list((tmp_path / "x" / "thumbs").iterdir())) == 6


def test_comparing_a_missing_run_names_it(runs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nowhere"):
        compare_runs(runs[0], tmp_path / "nowhere")
