"""The plan reward's LLM-judge variant on a hand-made plan, against the fault-injecting fake server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.fakes.chat_server import Completion, FakeChatServer, Status
from tests.records import trajectory, turn_record
from visioncreator.evals import JudgeCache, JudgeClient, JudgeHTTPError, JudgeSettings
from visioncreator.graph import Trajectory
from visioncreator.policy import Task
from visioncreator.rl import RewardContext, plan_reward
from visioncreator.rl.rewards.judge import PlanJudge
from visioncreator.tool_servers.synthetic import CheckItem

REQUEST = "two red apples to the left of a blue bowl"
PLAN = [
    {"step": 1, "goal": "the apples and the bowl", "tool": "text_to_image", "prompt": "two red apples left of a bowl"}
]
CHECKLIST = (
    CheckItem(check="count", subject="apple", value=2),
    CheckItem(check="color", subject="bowl", value="blue"),
)


def _trajectory(plan: list[dict[str, Any]] | None) -> Trajectory:
    turns = [] if plan is None else [turn_record(0, "plan", f"<plan>{json.dumps(plan)}</plan>")]
    return trajectory(turns, task=Task(request=REQUEST))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


@pytest.fixture
def chat(server: FakeChatServer) -> FakeChatServer:
    server.set(Completion(texts=['{"reason": "the bowl has no colour", "rating": 6, "q1": "yes", "q2": "no"}']))
    return server


def _client(chat: FakeChatServer, **overrides: Any) -> JudgeClient:
    values: dict[str, Any] = {"base_url": chat.base_url, "model": "judge", "backoff_s": 0.01, "timeout_s": 5.0}
    return JudgeClient(JudgeSettings(**(values | overrides)))


async def test_the_judge_rates_the_plan_against_request_and_checklist(chat: FakeChatServer) -> None:
    cache = JudgeCache(":memory:")
    async with _client(chat) as client:
        judge = PlanJudge(client, cache)
        with anyio.fail_after(30):
            result = await judge(_trajectory(PLAN), RewardContext(checklist=CHECKLIST))
            again = await judge(_trajectory(PLAN), RewardContext(checklist=CHECKLIST))
    assert result.value == pytest.approx((0.6 + 0.5) / 2)
    assert result.details["rating"] == 6
    assert result.details["covered"] == 1
    assert result.details["items"] == 2
    assert result.details["reason"] == "the bowl has no colour"
    assert not result.details["cached"]
    assert again.details["cached"]
    assert again.value == result.value
    assert len(chat.requests) == 1
    body = chat.requests[0]
    prompt = body["messages"][-1]["content"]
    assert f"Request: {REQUEST}" in prompt
    assert "exactly 1 image(s)" in prompt
    assert "two red apples left of a bowl" in prompt
    assert "q2: Does some step's prompt ask for this? Is every bowl blue? (image 0)" in prompt
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["reason", "rating", "q1", "q2"]
    assert schema["properties"]["q1"]["enum"] == ["yes", "no"]


async def test_without_checklist_the_rating_is_the_reward(chat: FakeChatServer) -> None:
    chat.set(Completion(texts=['{"reason": "fine", "rating": 9}']))
    async with _client(chat) as client:
        with anyio.fail_after(30):
            result = await PlanJudge(client)(_trajectory(PLAN), RewardContext())
    assert result.value == pytest.approx(0.9)
    assert "covered" not in result.details
    assert "q1" not in chat.requests[0]["response_format"]["json_schema"]["schema"]["properties"]


async def test_no_plan_scores_zero_without_asking(chat: FakeChatServer) -> None:
    async with _client(chat) as client:
        result = await PlanJudge(client)(_trajectory(None), RewardContext(checklist=CHECKLIST))
    assert result.value == 0.0
    assert result.details == {"plan": False}
    assert chat.requests == []


async def test_a_failing_judge_raises_or_falls_back_to_the_rule(chat: FakeChatServer) -> None:
    chat.set(Status(503))
    trajectory, context = _trajectory(PLAN), RewardContext(checklist=CHECKLIST)
    async with _client(chat, max_retries=1) as client:
        with anyio.fail_after(30), pytest.raises(JudgeHTTPError, match="HTTP 503"):
            await PlanJudge(client)(trajectory, context)
        with anyio.fail_after(30):
            result = await PlanJudge(client, fallback=True)(trajectory, context)
    assert result.value == plan_reward(trajectory, context).value
    assert result.details["fallback"] is True
    assert "HTTP 503" in result.details["error"]
