"""The real vLLM CPU server, started by our launcher, driving the graph through the ``openai`` back end."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graph.conftest import make_client, run
from tests.vllm.conftest import WORDS, ConstrainedPolicy, policy_settings, vllm_python
from visioncreator.graph.runner import RunResult
from visioncreator.policy import Message, PolicyRequest, Task, task_message
from visioncreator.policy.chat_template import END_OF_TURN
from visioncreator.policy.vllm import (
    VLLMInstall,
    VLLMNotFoundError,
    VLLMServer,
    VLLMServerSettings,
    build_command,
    probe_install,
    serve_policy,
)

pytestmark = pytest.mark.vllm

TASK = Task(request="a red fox next to a blue car")
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def trajectory(vllm_server: VLLMServer, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One task run through the graph against the real server, the node instruction off (see the prefix test)."""
    store = tmp_path_factory.mktemp("store")
    policy = ConstrainedPolicy(policy_settings(vllm_server, append_node_instruction=False))

    async def go() -> RunResult:
        async with make_client(store) as tools:
            return await asyncio.wait_for(run(tools, TASK, policy=policy, seed=7), TIMEOUT_S)

    return asyncio.run(go())


def test_launcher_serves_the_cpu_build_on_loopback(vllm_server: VLLMServer) -> None:
    assert vllm_server.install.cpu
    assert vllm_server.running
    assert vllm_server.url.startswith("http://127.0.0.1:")
    argv = vllm_server.command
    for flag in (
        "--enable-auto-tool-choice",
        "--enable-prefix-caching",
        "--enforce-eager",
        "--structured-outputs-config",
    ):
        assert flag in argv
    assert argv[argv.index("--tool-call-parser") + 1] == "hermes"
    assert "--limit-mm-per-prompt" not in argv  # a text-only model
    models = httpx.get(f"{vllm_server.base_url}/models", timeout=TIMEOUT_S).json()
    assert [m["id"] for m in models["data"]] == [vllm_server.model]


def test_graph_runs_a_task_on_the_real_server(trajectory: RunResult) -> None:
    state = trajectory.state
    assert [t.node for t in state["turns"]] == ["plan", "act", "reflect", "act"]
    assert all(not t.errors for t in state["turns"]), [t.errors for t in state["turns"]]
    made = [c for c in state["tool_calls"] if c.by == "policy"]
    assert [c.name for c in made] == ["text_to_image"]
    assert made[0].ok
    assert state["termination"] == "answered"
    assert state["answer"] == [made[0].handle]


def test_every_turn_records_token_ids_and_logprobs(trajectory: RunResult) -> None:
    for turn in trajectory.state["turns"]:
        completion = turn.completion_token_ids
        assert turn.prompt_token_ids
        assert completion
        assert turn.logprobs is not None
        assert len(turn.logprobs) == len(completion)
        assert all(lp <= 0.0 for lp in turn.logprobs)


def test_consecutive_prompts_extend_the_last_prompt(trajectory: RunResult, tiny_model: Path) -> None:
    """Turn k+1's prompt ids begin with turn k's prompt ids, then the re-rendered turn k.

    Token-exact across the prompt; not across the completion: the sampled ids are not always the
    tokenizer's own encoding of the same text (a constrained random model spells ``<plan>`` in
    pieces), and a completion may end on either EOS token while the template always writes
    ``<|im_end|>``. The recorder keeps each turn's own ids, which are exact for that turn.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    end = tok.convert_tokens_to_ids(END_OF_TURN)
    turns = trajectory.state["turns"]
    report: list[dict[str, Any]] = []
    for before, after in itertools.pairwise(turns):
        prompt, completion, following = (
            list(before.prompt_token_ids or ()),
            list(before.completion_token_ids or ()),
            list(after.prompt_token_ids or ()),
        )
        assert following[: len(prompt)] == prompt, "the template rewrote an earlier part of the conversation"
        canonical = [*tok.encode(before.text, add_special_tokens=False), end]
        assert following[len(prompt) : len(prompt) + len(canonical)] == canonical
        sampled = next((i for i, (a, b) in enumerate(zip(completion, canonical, strict=False)) if a != b), None)
        report.append({"turn": before.index, "first_differing_completion_token": sampled, "sampled": len(completion)})
    print("prefix report:", json.dumps(report))


async def test_sample_returns_n_distinct_completions(vllm_server: VLLMServer) -> None:
    request = PolicyRequest(messages=(task_message(TASK),), node="plan", seed=3)
    policy = ConstrainedPolicy(policy_settings(vllm_server))
    turns = await asyncio.wait_for(policy.sample(request, 4), TIMEOUT_S)
    assert len(turns) == 4
    assert len({t.text for t in turns}) == 4
    assert all(t.parsed.plan is not None for t in turns)
    assert all(t.logprobs and t.completion_token_ids and len(t.logprobs) == len(t.completion_token_ids) for t in turns)
    assert len({t.prompt_token_ids for t in turns}) == 1


async def test_prefix_cache_serves_a_repeated_prompt(vllm_server: VLLMServer) -> None:
    def hits() -> float:
        text = httpx.get(f"{vllm_server.url}/metrics", timeout=TIMEOUT_S).text
        line = next(x for x in text.splitlines() if x.startswith("vllm:prefix_cache_hits_total"))
        return float(line.rsplit(" ", 1)[1])

    long_prompt = "the quick brown fox jumps over the lazy dog " * 60  # several 128-token blocks
    body = {"model": vllm_server.model, "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 2}
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        (await client.post(f"{vllm_server.base_url}/chat/completions", json=body)).raise_for_status()
        before = hits()
        (await client.post(f"{vllm_server.base_url}/chat/completions", json=body)).raise_for_status()
    assert hits() - before >= 128


async def test_regex_bounds_a_random_model(vllm_server: VLLMServer) -> None:
    body = {
        "model": vllm_server.model,
        "messages": [Message(role="user", content="say hi").model_dump(include={"role", "content"})],
        "max_tokens": 32,
        "structured_outputs": {"regex": WORDS},
    }
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        reply = (await client.post(f"{vllm_server.base_url}/chat/completions", json=body)).json()
    text = reply["choices"][0]["message"]["content"]
    assert 1 <= len(text) <= 20
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_a_dead_start_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    settings = VLLMServerSettings(python=str(vllm_python()), log_file=tmp_path / "log.txt", startup_timeout_s=TIMEOUT_S)
    cli = [sys.executable, "-m", "visioncreator.policy.vllm", str(empty), "--python", settings.python or ""]
    done = subprocess.run(
        [*cli, "--log-file", str(tmp_path / "cli.log"), "--startup-timeout", str(TIMEOUT_S)],
        capture_output=True, text=True, timeout=TIMEOUT_S + 30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "vLLM exited with code" in done.stderr
    assert "log tail" in done.stderr


def test_no_vllm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VLLMNotFoundError, match="cannot run"):
        serve_policy(tmp_path, settings=VLLMServerSettings(python=str(tmp_path / "no-python")))
    with pytest.raises(VLLMNotFoundError, match="has no vllm"):
        probe_install(sys.executable)


def test_gpu_build_gets_no_cpu_settings(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {}}))
    settings = VLLMServerSettings(chat_template=tmp_path / "t.jinja", images_per_prompt=3)
    gpu = VLLMInstall(python="python", version="0.32.0", cpu=False)
    argv, env = build_command(tmp_path, settings=settings, install=gpu, port=8000)
    assert "--enforce-eager" not in argv
    assert "--dtype" not in argv
    assert "--max-num-batched-tokens" not in argv
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert env["HF_HUB_OFFLINE"] == "1"
    assert argv[argv.index("--limit-mm-per-prompt") + 1] == '{"image": 3}'
    assert argv[argv.index("--chat-template") + 1] == str(tmp_path / "t.jinja")
    cpu = VLLMInstall(python="python", version="0.32.0", cpu=True, cli=False)
    argv, env = build_command(tmp_path, settings=settings, install=cpu, port=8000)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "--enforce-eager" in argv
