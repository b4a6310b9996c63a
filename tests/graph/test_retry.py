"""Retries are explicit: the policy nodes retry exactly the exception types their RetryPolicy names."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.graph.conftest import make_client
from visioncreator.graph import AgentConfig, PolicyTurnTimeout, RetrySettings, TaskRunner
from visioncreator.policy import (
    PolicyConnectionError,
    PolicyHTTPError,
    PolicyRequest,
    PolicyTimeoutError,
    PolicyTurn,
    Task,
    parse_turn,
)

PLAN = '<plan>[{"step": 1, "goal": "a fox", "tool": "text_to_image", "prompt": "a fox"}]</plan>'
FAST = RetrySettings(max_attempts=3, initial_interval_s=0.01, max_interval_s=0.02, jitter=False)


class Flaky:
    """Raises ``error`` on its first ``failures`` calls, then plans and gives up (a finish turn)."""

    name = "flaky"

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        text = PLAN if request.node == "plan" else '<answer>{"images": []}</answer>'
        return PolicyTurn(text=text, parsed=parse_turn(text), model=self.name)


async def _run(tmp_path: Path, policy: Flaky, retry: RetrySettings = FAST) -> str:
    async with make_client(tmp_path / "store") as tools:
        runner = TaskRunner(policy=policy, tools=tools, config=AgentConfig(policy_retry=retry))
        with anyio.fail_after(30):
            result = await runner.run(Task(request="a fox"))
    return result.trajectory.termination


async def test_a_retryable_transport_error_is_retried_up_to_the_configured_attempts(tmp_path: Path) -> None:
    policy = Flaky(PolicyConnectionError("connection refused"), failures=2)
    assert await _run(tmp_path, policy) == "invalid_answer"  # planned on the third attempt, then answered nothing
    assert policy.calls == 2 + 2  # two failures, then plan and act


async def test_retries_stop_after_max_attempts(tmp_path: Path) -> None:
    policy = Flaky(PolicyConnectionError("connection refused"), failures=10)
    with pytest.raises(PolicyConnectionError):
        await _run(tmp_path, policy)
    assert policy.calls == FAST.max_attempts


@pytest.mark.parametrize(
    "error",
    [PolicyHTTPError(400, "bad request"), PolicyTimeoutError("read timeout"), ValueError("a bug")],
    ids=["http", "timeout", "value"],
)
async def test_an_error_not_named_is_not_retried_at_all(tmp_path: Path, error: Exception) -> None:
    policy = Flaky(error, failures=10)
    with pytest.raises(type(error)):
        await _run(tmp_path, policy)
    assert policy.calls == 1


async def test_a_slow_turn_times_out_and_is_retried_when_named(tmp_path: Path) -> None:
    class Slow(Flaky):
        async def respond(self, request: PolicyRequest) -> PolicyTurn:
            if self.calls < self.failures:
                self.calls += 1
                await anyio.sleep(5)
            return await super().respond(request)

    retry = RetrySettings(max_attempts=2, initial_interval_s=0.01, jitter=False, retry_on=(PolicyTurnTimeout,))
    policy = Slow(ValueError("unused"), failures=1)
    async with make_client(tmp_path / "store") as tools:
        config = AgentConfig(policy_retry=retry, policy_timeout_s=0.2)
        runner = TaskRunner(policy=policy, tools=tools, config=config)
        with anyio.fail_after(30):
            result = await runner.run(Task(request="a fox"))
    assert result.trajectory.turns[0].node == "plan"
    assert policy.calls == 1 + 2


def test_max_attempts_must_allow_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetrySettings(max_attempts=0)
