"""The eval runner with a vision judge (the fake OpenAI-compatible server): scores land in the results, cached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_server import Completion, FakeChatServer
from visioncreator.evals.results import read_results
from visioncreator.evals.runner import JUDGE_CACHE, EvalSettings, run_eval

ANSWERS: dict[str, dict[str, Any]] = {
    "semantic_consistency": {"reason": "follows the request", "score": 8},
    "edit_consistency": {"reason": "edit done", "editing_success": 9, "over_editing": 4},
    "perceptual_quality": {"reason": "a bit flat", "naturalness": 9, "artifacts": 4},
}


def _answer(body: dict[str, Any]) -> str:
    name = body["response_format"]["json_schema"]["name"]
    if name == "checklist":
        properties = body["response_format"]["json_schema"]["schema"]["properties"]
        return json.dumps(dict.fromkeys(properties, "yes"))
    return json.dumps(ANSWERS[name])


@pytest.fixture
def judge_server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        fake.set(Completion(texts=_answer))
        yield fake


async def test_a_judged_run_records_scores_and_a_rerun_asks_nothing(
    judge_server: FakeChatServer, tmp_path: Path
) -> None:
    def settings(out: Path) -> EvalSettings:
        return EvalSettings(
            out=out, splits=("single",), limit=2, judge=judge_server.base_url, judge_model="judge", judge_mode="text"
        )

    outcome = await run_eval(settings(tmp_path / "a"))
    assert outcome.ran == 2
    results = read_results(tmp_path / "a")
    assert len(results) == 2
    for result in results:
        assert result.scorer == "synthetic"  # the verifier still decides success; the judge adds its view
        assert len(result.judge) == len(result.answer) == 1
        score = result.judge[0]
        assert score.error is None
        assert score.semantic_consistency == 8
        assert score.perceptual_quality == 4  # VIEScore: the lower of naturalness and artifacts
        assert score.overall == pytest.approx((8 * 4) ** 0.5)
        assert score.checklist
        assert all(score.checklist.values())
    assert (tmp_path / "a" / JUDGE_CACHE).is_file()
    asked = len(judge_server.requests)
    assert asked >= 2 * 3  # three questions per image

    # The same images judged again (a second run folder sharing nothing but the cache file) ask nothing.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / JUDGE_CACHE).write_bytes((tmp_path / "a" / JUDGE_CACHE).read_bytes())
    await run_eval(settings(tmp_path / "b"))
    again = read_results(tmp_path / "b")
    assert all(s.cached for r in again for s in r.judge)
    assert len(judge_server.requests) == asked
