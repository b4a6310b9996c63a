"""SFT exports label a reviewed reflect turn with the reviewer's verdicts (a real reviewed graph run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.graph.conftest import make_client
from visioncreator.graph import AgentConfig, Trajectory, build_agent, expert_policy, open_checkpointer, run_task
from visioncreator.policy import Task, build_tiny_lm, parse_turn
from visioncreator.rl.exports import ExportError, sft_conversation, sft_dataset
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("datasets")
pytest.importorskip("transformers")

NOTE = "the dog should sit"


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Trajectory:
    """A task whose first image the policy accepted and the reviewer sent back for a redo."""
    root = tmp_path_factory.mktemp("reviewed")
    answers = iter([f"redo {NOTE}", "approve"])

    async def go() -> Trajectory:
        async with make_client(root / "store") as tools, open_checkpointer(root / "cp.sqlite") as saver:
            agent = build_agent(
                policy=expert_policy(), tools=tools, config=AgentConfig(review=True), checkpointer=saver
            )
            with anyio.fail_after(60):
                result = await run_task(agent, Task(request="a brown dog"), reviewer=lambda _p: next(answers))
        return result.trajectory

    return anyio.run(go)


def _reflect_contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "assistant" and "<reflect>" in m["content"]]


def _verdicts(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.verdict, r.faults) for r in parse_turn(text).reflections]


def test_the_export_prefers_the_reviewers_verdict(reviewed: Trajectory) -> None:
    first = next(t for t in reviewed.turns if t.review is not None)
    assert _verdicts(first.text) == [("accept", ())]  # the policy's own verdict, kept on the record
    human = _reflect_contents(sft_conversation(reviewed)["messages"])
    assert [_verdicts(c) for c in human] == [[("redo", (NOTE,))], [("accept", ())]]
    policy = _reflect_contents(sft_conversation(reviewed, labels="policy")["messages"])
    assert [_verdicts(c) for c in policy] == [[("accept", ())], [("accept", ())]]
    rows = sft_dataset([reviewed]).to_list()
    assert json.dumps(rows[0]["messages"]).count(NOTE) == 1
    with pytest.raises(ExportError, match="labels must be"):
        sft_conversation(reviewed, labels="nobody")  # type: ignore[arg-type]


def test_pre_tokenized_rows_train_on_the_reviewers_verdict(reviewed: Trajectory, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "model"))
    trained: dict[str, str] = {}
    for labels in ("review", "policy"):
        (row,) = sft_dataset([reviewed], tokenizer, labels=labels).to_list()
        ids = [t for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m]
        trained[labels] = tokenizer.decode(ids, skip_special_tokens=False)
    assert NOTE in trained["review"]
    assert '"verdict":"redo"' in trained["review"]
    assert NOTE not in trained["policy"]
    assert '"verdict":"redo"' not in trained["policy"]
