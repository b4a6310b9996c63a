"""Token samples from real trajectories: the graph, in-process tools, a tiny transformers policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.graph.conftest import make_client, run
from visioncreator.graph import AgentConfig, Budgets
from visioncreator.graph.trajectory import Timings, Trajectory, build_trajectory
from visioncreator.policy import LocalPolicySettings, Message, Task, TransformersPolicy, build_tiny_lm
from visioncreator.policy.chat_template import END_OF_TURN, chat_messages
from visioncreator.policy.format import write_tool_call
from visioncreator.policy.prompting import system_message
from visioncreator.policy.types import ToolCall
from visioncreator.rl.samples import SampleError, TokenSample, sft_token_sample, token_sample
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")

CONFIG = AgentConfig(budgets=Budgets(max_turns=4, max_tool_calls=2, wall_time_s=120), max_format_retries=10)
TOOL_CALL = write_tool_call(ToolCall(name="text_to_image", arguments={"prompt": "a red fox"}))


async def _trajectory(model: Path, store: Path, *, temperature: float) -> Trajectory:
    settings = LocalPolicySettings(max_new_tokens=24, seed=0, temperature=temperature, torch_threads=1)
    async with make_client(store) as tools:
        with anyio.fail_after(120):
            result = await run(
                tools, Task(request="a red fox"), policy=TransformersPolicy(model, settings=settings), config=CONFIG
            )
    return build_trajectory(result.state, thread_id="t", wall_s=1.0)


def _teach_tool_call(model_dir: Path, prompt: list[int], out: Path) -> Path:
    """Fit the random model, briefly, to answer every prompt with one text_to_image call.

    A random model never writes a parseable call, so its trajectories hold error feedback but no
    tool observations; this one calls the real tools and sees their observations between turns.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    target = list(tok(TOOL_CALL + END_OF_TURN, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([[*prompt, *target]])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < 0.05:  # greedy decoding writes the call, with a margin
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "generation_config.json").write_text((model_dir / "generation_config.json").read_text())
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose tokenizer has seen the real system prompt (~4x shorter prompts)."""
    root = tmp_path_factory.mktemp("tiny")

    async def system_text() -> str:
        async with make_client(root / "store") as tools:
            return system_message(tools.policy_tools(), CONFIG.budgets.as_dict()).content

    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=root / "model", extra_corpus=[anyio.run(system_text)])


@pytest.fixture(scope="module")
def trajectories(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trajectory]:
    """A random model's trajectory (error feedback between turns) and a tool-calling one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("runs")
        random = anyio.run(lambda: _trajectory(tiny_dir, root / "store", temperature=1.0))
        prompt = random.turns[0].prompt_token_ids
        caller = _teach_tool_call(tiny_dir, prompt, root / "caller")
        calling = anyio.run(lambda: _trajectory(caller, root / "store", temperature=0.0))
    finally:
        torch.set_num_threads(threads)
    return {"random": random, "calling": calling}


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _render(tokenizer: Any, messages: list[Message], node: Any, *, gen: bool) -> str:
    chat = chat_messages(messages, node)
    return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen))


def _decode(tokenizer: Any, ids: Any) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))


def test_the_tool_calling_trajectory_has_tool_observations_between_turns(trajectories: dict[str, Trajectory]) -> None:
    calling = trajectories["calling"]
    assert len(calling.turns) >= 3
    assert calling.turns[0].text == TOOL_CALL
    assert any(c.ok and c.by == "policy" for c in calling.tool_calls)
    seen = [m.role for m in calling.messages[calling.turns[0].n_messages : calling.turns[-1].n_messages]]
    assert "tool" in seen
    assert "assistant" in seen


@pytest.mark.parametrize("kind", ["random", "calling"])
def test_prompt_and_completion_reconstruct_the_recorded_conversation(
    trajectories: dict[str, Trajectory], tokenizer: Any, kind: str
) -> None:
    trajectory = trajectories[kind]
    sample = token_sample(trajectory)
    messages = trajectory.messages
    last = trajectory.turns[-1]
    assert messages[last.n_messages].role == "assistant"
    rendered = _render(tokenizer, messages[: last.n_messages + 1], None, gen=False)
    decoded = _decode(tokenizer, sample.input_ids)
    # The rendering closes the last message; the sample ends where the policy stopped writing.
    assert rendered.startswith(decoded)
    tail = "\n" if last.completion_token_ids[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN) else "<|im_end|>\n"
    assert rendered[len(decoded) :] == tail
    assert sample.prompt_ids == tuple(trajectory.turns[0].prompt_token_ids)


@pytest.mark.parametrize("kind", ["random", "calling"])
def test_policy_spans_are_the_completions_and_env_spans_the_rest(
    trajectories: dict[str, Trajectory], tokenizer: Any, kind: str
) -> None:
    trajectory = trajectories[kind]
    sample = token_sample(trajectory)
    messages = [Message.model_validate(m) for m in trajectory.messages]
    turns = trajectory.turns
    spans = sample.spans()
    policy = [s for s in spans if s.policy]
    env = [s for s in spans if not s.policy]
    assert [s.turn for s in policy] == [t.index for t in turns]
    assert len(env) == len(turns) - 1  # one run of environment tokens between consecutive turns
    for span, turn in zip(policy, turns, strict=True):
        assert sample.completion_ids[span.start : span.end] == tuple(turn.completion_token_ids)
        assert sample.logprobs is not None
        assert sample.logprobs[span.start : span.end] == tuple(turn.logprobs)
        assert set(sample.nodes[span.start : span.end]) == {turn.node}
        text = tokenizer.decode(list(sample.completion_ids[span.start : span.end]), skip_special_tokens=True)
        assert text == turn.text
    for span, before, after in zip(env, turns[:-1], turns[1:], strict=True):
        assert sample.logprobs is not None
        assert set(sample.logprobs[span.start : span.end]) == {0.0}
        assert set(sample.turns[span.start : span.end]) == {-1}
        assert set(sample.nodes[span.start : span.end]) == {""}
        # What the template put between the two turns: end of turn, the messages the graph added
        # (observations, error feedback), the next node's instruction and the generation prompt.
        earlier = _render(tokenizer, messages[: before.n_messages], before.node, gen=True) + before.text
        later = _render(tokenizer, messages[: after.n_messages], after.node, gen=True)
        assert later.startswith(earlier)
        between = _decode(tokenizer, sample.completion_ids[span.start : span.end])
        expected = later[len(earlier) :]
        if before.completion_token_ids[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN):
            expected = expected.removeprefix(END_OF_TURN)  # the policy wrote it: policy token
        assert between == expected
        for m in messages[before.n_messages + 1 : after.n_messages]:
            assert m.content in between
    if kind == "calling":
        observations = [m.content for m in messages if m.role == "tool"]
        env_text = "".join(_decode(tokenizer, sample.completion_ids[s.start : s.end]) for s in env)
        assert observations
        assert all(o in env_text for o in observations)
        policy_text = "".join(_decode(tokenizer, sample.completion_ids[s.start : s.end]) for s in policy)
        assert "<observation>" not in policy_text


def _hand_made(turns: list[dict[str, Any]]) -> Trajectory:
    return Trajectory(
        thread_id="hand",
        seed=0,
        task={"request": "a red fox"},
        messages=[],
        turns=turns,
        tool_calls=[],
        answer=[],
        termination="answered",
        timings=Timings(wall_s=0.0, policy_s=0.0, tools_s=0.0),
    )


def _turn(
    index: int, node: str, prompt: list[int] | None, completion: list[int] | None, **extra: Any
) -> dict[str, Any]:
    logprobs = [-0.5] * len(completion) if completion is not None else None
    return {
        "index": index,
        "node": node,
        "text": "",
        "prompt_token_ids": prompt,
        "completion_token_ids": completion,
        "logprobs": logprobs,
        **extra,
    }


def test_a_hand_made_chain_gives_the_expected_masks() -> None:
    sample = token_sample(
        _hand_made([_turn(0, "plan", [1, 2, 3], [10, 11]), _turn(1, "act", [1, 2, 3, 10, 11, 7, 8], [12])])
    )
    assert sample == TokenSample(
        prompt_ids=(1, 2, 3),
        completion_ids=(10, 11, 7, 8, 12),
        env_mask=(1, 1, 0, 0, 1),
        logprobs=(-0.5, -0.5, 0.0, 0.0, -0.5),
        nodes=("plan", "plan", "", "", "act"),
        turns=(0, 0, -1, -1, 1),
    )
    assert sample.policy_tokens == 3


def test_a_prompt_that_does_not_extend_the_previous_turn_is_refused_by_name() -> None:
    broken = _hand_made(
        [
            _turn(0, "plan", [1, 2, 3], [10, 11]),
            _turn(1, "act", [1, 2, 3, 10, 11, 7], [12]),
            _turn(2, "reflect", [1, 2, 3, 10, 99, 7, 12, 5], [13]),
        ]
    )
    with pytest.raises(
        SampleError, match=r"turn 2 \(reflect\).*token 4.*expected \[11, 7, 12\].*found \[99, 7, 12, 5\]"
    ):
        token_sample(broken)


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([], "no policy turns"),
        ([_turn(0, "plan", None, [1])], r"turn 0 \(plan\) has no prompt_token_ids"),
        ([_turn(0, "plan", [1], [2]), _turn(1, "act", [1, 2], None)], r"turn 1 \(act\) has no completion_token_ids"),
        ([_turn(0, "plan", [1], [2], logprobs=[-1.0, -2.0])], r"turn 0 \(plan\) has 2 logprobs for 1 completion"),
    ],
)
def test_missing_or_inconsistent_ids_are_refused(turns: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(SampleError, match=match):
        token_sample(_hand_made(turns))


def test_a_turn_without_logprobs_gives_a_sample_without_them() -> None:
    sample = token_sample(_hand_made([_turn(0, "plan", [1], [2], logprobs=None)]))
    assert sample.logprobs is None
    assert sample.env_mask == (1,)


def test_per_token_fields_must_match_the_completion() -> None:
    with pytest.raises(SampleError, match="env_mask has 1 entries for 2 completion tokens"):
        TokenSample(prompt_ids=(1,), completion_ids=(2, 3), env_mask=(1,), logprobs=None, nodes=("", ""), turns=(0, 0))


@pytest.fixture(scope="module")
def expert_trajectory(tmp_path_factory: pytest.TempPathFactory) -> Trajectory:
    async def go() -> Trajectory:
        async with make_client(tmp_path_factory.mktemp("expert") / "store") as tools:
            with anyio.fail_after(60):
                result = await run(tools, Task(request="a red fox reading a newspaper", n_images=2, split="multi"))
        return build_trajectory(result.state, thread_id="e", wall_s=1.0)

    return anyio.run(go)


def test_sft_sample_masks_exactly_the_assistant_turns(expert_trajectory: Trajectory, tokenizer: Any) -> None:
    sample = sft_token_sample(expert_trajectory, tokenizer)
    messages = [Message.model_validate(m) for m in expert_trajectory.messages]
    assistants = [m for m in messages if m.role == "assistant"]
    assert len(assistants) >= 3
    last = max(j for j, m in enumerate(messages) if m.role == "assistant")
    assert _decode(tokenizer, sample.input_ids) == _render(tokenizer, messages[: last + 1], None, gen=False)
    spans = sample.spans()
    policy = [s for s in spans if s.policy]
    assert [s.turn for s in policy] == list(range(len(assistants)))
    for span, message in zip(policy, assistants, strict=True):
        assert _decode(tokenizer, sample.completion_ids[span.start : span.end]) == message.content + END_OF_TURN
        assert set(sample.nodes[span.start : span.end]) == {message.node}
    between = [_decode(tokenizer, sample.completion_ids[s.start : s.end]) for s in spans if not s.policy]
    assert between[-1] == "\n"  # after the last turn's end-of-turn token
    for text in between[:-1]:
        # The rest of the closing line, the messages the graph added, the next node's instruction.
        assert text.startswith("\n<|im_start|>")
        assert text.endswith("<|im_start|>assistant\n")
    assert sample.logprobs is None
    # The prompt is what the first turn saw: the system and task messages and the plan instruction.
    assert _decode(tokenizer, sample.prompt_ids) == _render(tokenizer, messages[:2], "plan", gen=True)


def test_sft_sample_truncates_to_max_length(expert_trajectory: Trajectory, tokenizer: Any) -> None:
    full = sft_token_sample(expert_trajectory, tokenizer)
    cut = sft_token_sample(expert_trajectory, tokenizer, max_length=len(full.prompt_ids) + 5)
    assert cut.completion_ids == full.completion_ids[:5]
    assert cut.env_mask == full.env_mask[:5]
    with pytest.raises(SampleError, match="over max_length=3"):
        sft_token_sample(expert_trajectory, tokenizer, max_length=3)


def test_sft_sample_needs_an_assistant_turn(tokenizer: Any) -> None:
    empty = _hand_made([])
    with pytest.raises(SampleError, match="no assistant message"):
        sft_token_sample(empty, tokenizer)


def test_segments_are_optional_per_token_owners_kept_by_head() -> None:
    fields: dict[str, Any] = {"prompt_ids": (1,), "completion_ids": (2, 3, 4), "env_mask": (1, 0, 1), "logprobs": None}
    owners = {"nodes": ("act", "", "act"), "turns": (0, -1, 1)}
    assert TokenSample(**fields, **owners).segments is None
    sample = TokenSample(**fields, **owners, segments=("t0:tool_call:0", "", "t1:text"))
    assert sample.head(2).segments == ("t0:tool_call:0", "")
    with pytest.raises(SampleError, match="segments has 1 entries for 3 completion tokens"):
        TokenSample(**fields, **owners, segments=("t0:text",))


def test_the_expert_s_sft_sample_knows_the_segment_of_each_token(expert_trajectory: Trajectory, tokenizer: Any) -> None:
    from visioncreator.rl.credit import with_segments

    sample = with_segments(sft_token_sample(expert_trajectory, tokenizer), expert_trajectory, tokenizer)
    by_owner: dict[str, list[int]] = {}
    for token, owner, mask in zip(sample.completion_ids, sample.segments or (), sample.env_mask, strict=True):
        assert (owner == "") == (mask == 0)
        by_owner.setdefault(owner, []).append(token)
    for turn in expert_trajectory.turns:
        kinds: dict[str, int] = {}
        for segment in turn.segments:
            k = kinds.setdefault(segment.kind, 0)
            kinds[segment.kind] += 1
            owned = by_owner.pop(f"t{turn.index}:{segment.kind}:{k}")
            assert _decode(tokenizer, owned) == turn.text[segment.start : segment.end]
    # What is left of the policy's tokens is the text between segments and the end-of-turn tokens.
    assert all(owner.endswith(":text") for owner in by_owner if owner)
