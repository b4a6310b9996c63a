"""Batched local turns: concurrent turns share one left-padded generate, each recorded as if alone."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from visioncreator.policy import (
    LocalPolicySettings,
    Message,
    PolicyRequest,
    PolicyTurn,
    TransformersPolicy,
    build_tiny_lm,
    corpus_tools,
)
from visioncreator.policy.chat_template import first_divergence
from visioncreator.policy.local.decoding import PrefixCache, Row, Sampling, generate_rows, shared_prefix
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("torch")
pytest.importorskip("transformers")

IM_END = 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def loaded(tiny_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model: Any = AutoModelForCausalLM.from_pretrained(tiny_dir)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_dir)


def settings(**over: object) -> LocalPolicySettings:
    base: dict[str, object] = {"max_new_tokens": 20, "seed": 0, "torch_threads": 1, "batch_wait_s": 1.0}
    return LocalPolicySettings.model_validate({**base, **over})


def request(k: int, seed: int | None = 3) -> PolicyRequest:
    """Prompts of different lengths: ``k`` words of request and ``k`` earlier turns."""
    words = " ".join(itertools.islice(itertools.cycle(["red", "fox", "blue", "cat", "park", "bench"]), 3 * k + 1))
    history: list[Message] = []
    for j in range(k):
        history.append(Message.model_validate({"role": "assistant", "content": f"<think>step {j}</think>"}))
        history.append(Message(role="tool", content=f'<observation>{{"call_id": "c{j}", "ok": true}}</observation>'))
    messages = (
        Message(role="system", content="You are VisionCreator."),
        Message(role="user", content=f'{words}\n<task>{{"request": "{words}"}}</task>'),
        *history,
    )
    return PolicyRequest(messages=messages, node="plan", tools=corpus_tools(POLICY_TOOLS), seed=seed)


async def together(policy: TransformersPolicy, requests: list[PolicyRequest]) -> list[PolicyTurn]:
    with anyio.fail_after(120):
        return list(await asyncio.gather(*(policy.respond(r) for r in requests)))


async def alone(policy: TransformersPolicy, requests: list[PolicyRequest]) -> list[PolicyTurn]:
    with anyio.fail_after(120):
        return [await policy.respond(r) for r in requests]


def assert_same(batched: list[PolicyTurn], unbatched: list[PolicyTurn]) -> None:
    import torch

    for b, u in zip(batched, unbatched, strict=True):
        assert b.prompt_token_ids == u.prompt_token_ids
        assert b.completion_token_ids == u.completion_token_ids
        assert b.text == u.text
        assert b.logprobs is not None
        assert u.logprobs is not None
        assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(u.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
async def test_concurrent_turns_run_as_one_batch_and_record_what_alone_would(
    loaded: tuple[Any, Any], temperature: float
) -> None:
    """Greedy and seeded sampling: each row's ids, prompt and log-probabilities are its unbatched ones."""
    model, tokenizer = loaded
    requests = [request(k) for k in (0, 1, 3, 6)]
    lengths = set()
    batched = TransformersPolicy.from_model(model, tokenizer, settings=settings(temperature=temperature))
    single = TransformersPolicy.from_model(model, tokenizer, settings=settings(temperature=temperature, batch_size=1))
    got = await together(batched, requests)
    want = await alone(single, requests)
    assert batched._batcher.batches == [4]
    assert single._batcher.batches == [1, 1, 1, 1]
    assert_same(got, want)
    for turn in got:
        assert turn.prompt_token_ids is not None
        lengths.add(len(turn.prompt_token_ids))
    assert len(lengths) == 4  # really left-padded


async def test_a_row_that_ends_is_not_extended_and_the_others_go_on(loaded: tuple[Any, Any]) -> None:
    """Per-row stops: with an extra end token that one row meets early, that row ends there alone."""
    model, tokenizer = loaded
    requests = [request(k) for k in (0, 2, 5)]
    probe = await alone(TransformersPolicy.from_model(model, tokenizer, settings=settings(temperature=1.0)), requests)
    first = probe[0].completion_token_ids
    assert first is not None
    completions = [turn.completion_token_ids or () for turn in probe]

    def ends(token: int) -> list[int]:
        return [ids.index(token) + 1 if token in ids else len(ids) for ids in completions]

    # An extra end token that ends the rows at different steps (a random model repeats itself a lot).
    token = max(set(first), key=lambda t: (len(set(ends(t))), -min(ends(t))))
    expected = ends(token)
    assert len(set(expected)) > 1
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [IM_END, token]
    try:
        batched = TransformersPolicy.from_model(model, tokenizer, settings=settings(temperature=1.0))
        single = TransformersPolicy.from_model(model, tokenizer, settings=settings(temperature=1.0, batch_size=1))
        got = await together(batched, requests)
        want = await alone(single, requests)
    finally:
        model.generation_config.eos_token_id = original
    assert batched._batcher.batches == [3]
    assert_same(got, want)
    assert [len(t.completion_token_ids or ()) for t in got] == expected
    for turn, ids, end in zip(got, completions, expected, strict=True):
        assert turn.completion_token_ids == ids[:end]


def test_rows_keep_their_own_token_budget(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    prompts = [tokenizer(f"<think>{'a red fox ' * k}", add_special_tokens=False)["input_ids"] for k in (1, 4, 9)]
    sampling = Sampling(0.0, 1.0, 0, "processed", frozenset([IM_END]), 0)
    rows = [Row(p, None, budget, threading.Event()) for p, budget in zip(prompts, (3, 17, 9), strict=True)]
    together = generate_rows(model, rows, sampling)
    for row, (ids, logprobs) in zip(rows, together, strict=True):
        assert len(ids) == len(logprobs) == row.max_new_tokens
        assert generate_rows(model, [row], sampling)[0][0] == ids
    with pytest.raises(ValueError, match="at least one row"):
        generate_rows(model, [], sampling)


async def test_sample_draws_its_n_rows_in_one_batch(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    policy = TransformersPolicy.from_model(model, tokenizer, settings=settings())
    with anyio.fail_after(60):
        turns = await policy.sample(request(1), 3)
        again = await policy.respond(request(1))
    assert policy._batcher.batches == [3, 1]
    assert len({t.completion_token_ids for t in turns}) == 3
    # The first sample is the turn respond() gives: its seed is the turn's own.
    assert turns[0].completion_token_ids == again.completion_token_ids


async def test_an_error_in_one_row_fails_only_its_turn(
    loaded: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = loaded
    requests = [request(k) for k in (0, 1, 2)]
    want = await alone(TransformersPolicy.from_model(model, tokenizer, settings=settings(batch_size=1)), requests)
    policy = TransformersPolicy.from_model(model, tokenizer, settings=settings())
    encode = policy._encode
    poison = "POISON"
    # Fault injection: this prompt's ids are outside the vocabulary, so the embedding lookup raises.
    monkeypatch.setattr(policy, "_encode", lambda text: [10**6] if poison in text else encode(text))
    bad = request(1).model_copy(update={"messages": (*request(1).messages, Message(role="user", content=poison))})
    with anyio.fail_after(120):
        results = await asyncio.gather(
            *(policy.respond(r) for r in [requests[0], bad, *requests[1:]]), return_exceptions=True
        )
    assert isinstance(results[1], IndexError)
    good = [r for i, r in enumerate(results) if i != 1]
    assert all(isinstance(r, PolicyTurn) for r in good)
    assert_same(good, want)  # type: ignore[arg-type]
    assert policy._batcher.batches == [4, 1, 1, 1, 1]


async def test_a_cancelled_turn_leaves_its_batch_and_the_others_finish(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    policy = TransformersPolicy.from_model(
        model, tokenizer, settings=settings(max_new_tokens=400, batch_wait_s=0.2, temperature=0.0)
    )  # greedy: the random tiny model never writes its end-of-turn token, so both turns are long
    keep = asyncio.ensure_future(policy.respond(request(0)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(policy.respond(request(2)), timeout=0.5)
    with anyio.fail_after(120):
        turn = await keep
    assert len(turn.completion_token_ids or ()) == 400
    assert policy._batcher.batches == [2]


async def test_concurrent_conversations_stay_token_exact(loaded: tuple[Any, Any]) -> None:
    """Stitching under batching: every conversation's next prompt extends its previous prompt and completion."""
    model, tokenizer = loaded
    policy = TransformersPolicy.from_model(model, tokenizer, settings=settings(batch_wait_s=0.5))

    async def conversation(k: int) -> list[PolicyTurn]:
        base = request(k)
        extra: tuple[Message, ...] = ()
        turns = []
        for step in range(3):
            turn = await policy.respond(base.model_copy(update={"messages": (*base.messages, *extra)}))
            turns.append(turn)
            extra = (
                *extra,
                Message.model_validate({"role": "assistant", "content": turn.text, "node": "plan"}),
                Message(role="tool", content=f'<observation>{{"call_id": "x{step}", "ok": true}}</observation>'),
            )
        return turns

    with anyio.fail_after(120):
        runs = await asyncio.gather(*(conversation(k) for k in (0, 1, 4)))
    assert max(policy._batcher.batches) > 1
    for turns in runs:
        for a, b in itertools.pairwise(turns):
            assert a.prompt_token_ids is not None
            assert a.completion_token_ids is not None
            assert b.prompt_token_ids is not None
            assert first_divergence([*a.prompt_token_ids, *a.completion_token_ids], b.prompt_token_ids) is None


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_shared_prefix_is_read_once_and_rows_record_what_alone_would(
    loaded: tuple[Any, Any], temperature: float
) -> None:
    """Rows sharing a long prefix, then differing (different lengths): the prefix is run once, at batch size 1."""
    import torch

    model, _ = loaded
    draw = torch.Generator().manual_seed(0)
    head = torch.randint(5, 200, (300,), generator=draw).tolist()
    prompts = [head + torch.randint(5, 200, (k,), generator=draw).tolist() for k in (1, 40, 7, 0)]
    prompts[3] = head[:120]  # a row that is all prefix: the shared part stops one id short of it
    sampling = Sampling(temperature, 1.0, 0, "processed", frozenset([IM_END]), 0)
    rows = [Row(p, 11 + i, 16, threading.Event()) for i, p in enumerate(prompts)]
    read: list[tuple[int, ...]] = []

    def record(_: Any, __: Any, kwargs: dict[str, Any]) -> None:
        read.append(tuple(kwargs["input_ids"].shape))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        batched = generate_rows(model, rows, sampling)
    finally:
        hook.remove()
    assert shared_prefix(prompts) == 119
    assert read[0] == (1, 119)  # the prefix, once
    assert read[1] == (4, 340 - 119)  # then each row's own ids, left-padded
    for row, (ids, logprobs) in zip(rows, batched, strict=True):
        want_ids, want_logprobs = generate_rows(model, [row], sampling)[0]
        assert ids == want_ids
        assert len(ids) == 16
        assert torch.allclose(torch.tensor(logprobs), torch.tensor(want_logprobs), atol=1e-4, rtol=0)


def test_shared_prefix_leaves_every_row_an_id_of_its_own() -> None:
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[7], [7, 8]]) == 0
    assert shared_prefix([[1, 2], [3, 2]]) == 0


def test_conversations_keep_their_caches_and_a_weight_change_drops_them(loaded: tuple[Any, Any]) -> None:
    """A batch's next turns read only their new ids (from each conversation's kept cache), record what alone would."""
    import torch

    model, _ = loaded
    draw = torch.Generator().manual_seed(1)

    def fresh(k: int) -> list[int]:
        return torch.randint(5, 200, (k,), generator=draw).tolist()

    head = fresh(200)
    sampling = Sampling(0.8, 1.0, 0, "processed", frozenset([IM_END]), 0)
    prefix = PrefixCache()

    def turn(prompts: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, ...]]]:
        rows = [Row(p, 5 + i, 12, threading.Event()) for i, p in enumerate(prompts)]
        read: list[tuple[int, ...]] = []
        hook = model.register_forward_pre_hook(
            lambda _, __, kwargs: read.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
        )
        try:
            cached = generate_rows(model, rows, sampling, prefix=prefix)
        finally:
            hook.remove()
        for row, (ids, logprobs) in zip(rows, cached, strict=True):
            want_ids, want_logprobs = generate_rows(model, [row], sampling)[0]  # no cache at all
            assert ids == want_ids
            assert torch.allclose(torch.tensor(logprobs), torch.tensor(want_logprobs), atol=1e-4, rtol=0)
        return [ids for ids, _ in cached], read

    first = [head + fresh(30), head + fresh(12)]
    completions, read = turn(first)
    assert read[:2] == [(1, 200), (2, 30)]  # the shared head once, then each row's own ids
    assert len(prefix) == 2  # one entry a conversation (the head's entry is inside both)
    # Each conversation's cache holds its prompt and the completion ids the model read back.
    steps = max(len(c) for c in completions)
    covered = [len(p) + min(len(c), steps - 1) for p, c in zip(first, completions, strict=True)]
    second = [p + c + fresh(k) for p, c, k in zip(first, completions, (9, 4), strict=True)]
    before = prefix.reused
    _, read = turn(second)
    assert prefix.reused - before == sum(covered)
    assert read[0] == (2, max(len(p) - n for p, n in zip(second, covered, strict=True)))
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # a training step, in place
    try:
        before = prefix.reused
        _, read = turn(second)  # recomputed against the new weights: the head once, then the rest
        assert prefix.reused - before == 2 * 200
        assert read[0] == (1, 200)
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(1.5)


def test_the_prefix_cache_keeps_to_its_memory_budget(loaded: tuple[Any, Any]) -> None:
    """Past its budget the least recently used conversation goes; a budget of 0 keeps nothing."""
    import torch

    model, _ = loaded
    draw = torch.Generator().manual_seed(2)
    sampling = Sampling(0.0, 1.0, 0, "processed", frozenset([IM_END]), 0)
    prompts = [torch.randint(5, 200, (60,), generator=draw).tolist() for _ in range(4)]
    unbounded = PrefixCache()
    for p in prompts:
        generate_rows(model, [Row(p, 1, 8, threading.Event())], sampling, prefix=unbounded)
    assert len(unbounded) == 4
    one = unbounded.nbytes // 4
    bounded = PrefixCache(max_bytes=2 * one + one // 2)
    for p in prompts:
        generate_rows(model, [Row(p, 1, 8, threading.Event())], sampling, prefix=bounded)
    assert len(bounded) == 2
    assert bounded.nbytes <= bounded.max_bytes
    generate_rows(model, [Row(prompts[3] + [7], 1, 8, threading.Event())], sampling, prefix=bounded)
    assert bounded.reused == len(prompts[3])  # the most recent conversation is still there
    generate_rows(model, [Row(prompts[0] + [7], 1, 8, threading.Event())], sampling, prefix=bounded)
    assert bounded.reused == len(prompts[3])  # the oldest is gone
    nothing = PrefixCache(max_bytes=0)
    generate_rows(model, [Row(prompts[0], 1, 8, threading.Event())], sampling, prefix=nothing)
    assert len(nothing) == 0


def test_weights_without_a_version_counter_are_never_reused() -> None:
    """In-place changes and replaced data change the version; parameters without a counter never match."""
    import torch

    from visioncreator.policy.local.prefix_cache import weights_version

    tracked = torch.nn.Linear(3, 3)
    before = weights_version(tracked)
    assert weights_version(tracked) == before
    with torch.no_grad():
        tracked.weight.mul_(2.0)
    assert weights_version(tracked) != before
    before = weights_version(tracked)
    tracked.weight.data = torch.ones(3, 3)  # new data, its own fresh version counter
    assert weights_version(tracked) != before
    with torch.inference_mode():
        untracked = torch.nn.Linear(3, 3)
    assert weights_version(untracked) != weights_version(untracked)
