"""GRPO rollouts from the real vLLM CPU server, the trainer's LoRA adapter loaded into it at run time.

One server with LoRA enabled serves the tiny model for the module. The adapter is a real peft
adapter of that model; syncing saves it to a new folder and loads it in place
(``POST /v1/load_lora_adapter``). Checked: the served policy changes after a sync of changed
weights; the ids and log-probabilities the server returns are what the trainer's model (the same
adapter, the same ids) computes; ``train_grpo`` with ``rollouts="served"`` trains on the server's
turns and syncs after every step; Ray actors roll out against the same server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.vllm.conftest import policy_settings, server_settings, warm_up
from visioncreator.policy import PlanStep, TokenPolicy, VLLMServer, write_plan
from visioncreator.rl.train import (
    GraphRollout,
    GRPOStage,
    LoraSpec,
    PolicyModel,
    RayCollect,
    ServedPolicy,
    ServedRollouts,
    ServedRolloutsError,
    ServedSession,
    TaskSource,
)

pytestmark = pytest.mark.vllm

ADAPTER = "policy"
TASKS = TaskSource(splits=("single",), limit=2, fault_rate=0.0)
TOLERANCE = 1e-4
"""Largest |served - recomputed| log-probability accepted: both sides run float32 on this CPU
(vLLM's CPU kernels and punica LoRA against torch eager through peft). Measured: 1e-6 to 2.4e-6 in four runs."""
FIXED_PLAN = write_plan([PlanStep(step=1, goal="a red fox", tool="text_to_image")])
"""A fixed text whose ids the server scores (``prompt_logprobs``): only their log-probabilities can move."""


@pytest.fixture(scope="module")
def lora_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The server a served stage starts by default (no base_url): LoRA on, its rank from policy.lora."""
    work = tmp_path_factory.mktemp("vllm-lora")
    launcher = server_settings(work / "vllm.log")
    spec = ServedRollouts(
        adapter_name=ADAPTER,
        server={"python": launcher.python, "log_file": launcher.log_file, "env": dict(launcher.env)},
    )
    with ServedSession(spec, policy_model(tiny_model), model_dir=tiny_model, output_dir=work) as started:
        server = started.server
        assert server is not None
        argv = server.command
        assert "--enable-lora" in argv
        assert argv[argv.index("--max-lora-rank") + 1] == "8"
        warm_up(server)
        yield server
    assert not server.running


def policy_model(tiny_model: Path) -> PolicyModel:
    return PolicyModel(model=str(tiny_model), lora=LoraSpec(r=8, alpha=16), max_new_tokens=32, torch_threads=1)


def peft_model(tiny_model: Path, seed: int) -> Any:
    """The tiny model with a LoRA adapter whose B matrices are random (a zero B would change nothing)."""
    import torch
    from peft import get_peft_model

    from visioncreator.rl.train import load_policy_model, lora_config
    from visioncreator.rl.train.harness import quiet

    model, _ = load_policy_model(tiny_model)
    with quiet():  # peft reads transformers 5's deprecated gradient-checkpointing flag
        peft = get_peft_model(model, lora_config(LoraSpec(r=8, alpha=16)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return peft.eval()


def session(server: VLLMServer, tiny_model: Path, out: Path, **spec: Any) -> ServedSession:
    served = ServedRollouts(base_url=server.url, adapter_name=ADAPTER, **spec)
    return ServedSession(served, policy_model(tiny_model), model_dir=tiny_model, output_dir=out)


def fixed_logprobs(server: VLLMServer, model: str, ids: list[int]) -> list[float]:
    """The log-probability of each of ``ids`` after those before it (``prompt_logprobs``), served as ``model``."""
    body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
    reply = httpx.post(f"{server.base_url}/completions", json=body, timeout=120.0)
    reply.raise_for_status()
    scored = reply.json()["choices"][0]["prompt_logprobs"]
    assert scored[0] is None
    assert len(scored) == len(ids)
    return [float(entry[str(i)]["logprob"]) for entry, i in zip(scored[1:], ids[1:], strict=True)]


def test_a_sync_of_changed_weights_changes_the_served_policy(
    lora_server: VLLMServer, tiny_model: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model).encode("a red fox next to a blue car" + FIXED_PLAN)
    served = session(lora_server, tiny_model, tmp_path)
    base = fixed_logprobs(lora_server, lora_server.model, ids)

    first = served.sync(peft_model(tiny_model, seed=1), step=0)
    lp_1 = fixed_logprobs(lora_server, ADAPTER, ids)
    changed = peft_model(tiny_model, seed=2)
    started = time.perf_counter()
    second = served.sync(changed, step=1)
    print(f"sync (save + load into the server): {time.perf_counter() - started:.3f} s")
    lp_2 = fixed_logprobs(lora_server, ADAPTER, ids)

    assert (first.name, second.name) == ("step-000000", "step-000001")
    moved_1 = max(abs(a - b) for a, b in zip(base, lp_1, strict=True))
    moved_2 = max(abs(a - b) for a, b in zip(lp_1, lp_2, strict=True))
    print(f"max |logprob change|: base -> adapter 1 {moved_1:.4f}, adapter 1 -> adapter 2 {moved_2:.4f}")
    assert moved_1 > 0.01
    assert moved_2 > 0.01
    assert fixed_logprobs(lora_server, lora_server.model, ids) == base  # the base model is untouched
    models = httpx.get(f"{lora_server.base_url}/models", timeout=30.0).json()["data"]
    assert {m["id"]: m.get("root") for m in models}[ADAPTER] == str(second.resolve())


def test_served_ids_and_logprobs_match_the_trainer(lora_server: VLLMServer, tiny_model: Path, tmp_path: Path) -> None:
    """What TRL gets from served rollouts is what the trainer's model computes (same adapter, same ids).

    Unconstrained turns: with a structured-output constraint vLLM reports the log-probabilities of
    the masked distribution (0.0 for a forced token), which no forward pass reproduces. The random
    model's turns do not parse, so each is followed by an error observation (environment tokens).
    """
    import torch

    model = peft_model(tiny_model, seed=3)
    served = session(lora_server, tiny_model, tmp_path)
    served.sync(model, step=0)
    stage = GRPOStage(tasks=TASKS, num_generations=2, max_turns=4, max_completion_length=4096)
    settings = policy_settings(lora_server, model=ADAPTER, max_tokens=48, temperature=1.0)
    policies: list[TokenPolicy] = []

    def factory(_model: Any, tok: Any) -> TokenPolicy:
        policies.append(TokenPolicy(settings, tok, group_window_s=0.5))
        return policies[-1]

    rollout = GraphRollout(
        stage=stage, policy=policy_model(tiny_model), store=tmp_path / "store", policy_factory=factory
    )
    out = rollout(rollout_prompts(stage), _Trainer(model))
    [policy] = policies
    # each group's first turn (two members, one prompt) went as one request with n=2
    print(f"turns {policy.turns}, requests {policy.requests}")
    assert policy.turns == sum(len(r.record.turns) for r in rollout.last)
    assert policy.turns - policy.requests >= 2
    first = [r.record.turns[0] for r in rollout.last]
    assert len({t.completion_token_ids for t in first}) > 1  # distinct samples, not one copied

    worst, checked = 0.0, 0
    for prompt, completion, logprobs, mask in zip(
        out["prompt_ids"], out["completion_ids"], out["logprobs"], out["env_mask"], strict=True
    ):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        recomputed = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(completion)[:, None])[:, 0]
        policy = torch.tensor(mask, dtype=torch.bool)
        assert policy.sum() > 0
        assert (~policy).sum() > 0  # the observations between the turns
        diff = (recomputed[policy] - torch.tensor(logprobs)[policy]).abs()
        worst, checked = max(worst, float(diff.max())), checked + int(policy.sum())
    print(f"served vs trainer log-probabilities: max |diff| {worst:.2e} over {checked} policy tokens")
    assert worst < TOLERANCE
    assert all(len(r.record.turns) >= 2 for r in rollout.last)


class _Trainer:
    """What ``GraphRollout`` reads of a trainer: its state, accelerator, model and tokenizer."""

    def __init__(self, model: Any) -> None:
        from transformers import AutoTokenizer

        self.model = model
        self.processing_class = AutoTokenizer.from_pretrained(model.peft_config["default"].base_model_name_or_path)
        self.state = type("State", (), {"global_step": 0})()
        self.accelerator = type("Accelerator", (), {"unwrap_model": staticmethod(lambda m: m)})()


def rollout_prompts(stage: GRPOStage) -> list[Any]:
    """TRL's prompts for one batch: each task's prompt repeated ``num_generations`` times in a row."""
    from visioncreator.rl.train import load_tasks, task_prompt

    return [task_prompt(t) for t in load_tasks(stage.tasks) for _ in range(stage.num_generations)]


def test_grpo_takes_its_rollouts_from_the_server_and_syncs_every_step(
    lora_server: VLLMServer, tiny_model: Path, tmp_path: Path
) -> None:
    from visioncreator.rl.train import train_grpo

    served = ServedRollouts(base_url=lora_server.url, adapter_name=ADAPTER, keep_adapters=2)
    stage = GRPOStage(
        tasks=TASKS, num_generations=2, max_steps=2, max_turns=2, max_completion_length=4096, rollouts="served",
        served=served, save_steps=100,
    )  # fmt: skip
    batches: list[Mapping[str, Any]] = []
    result = train_grpo(stage, policy_model(tiny_model), output_dir=tmp_path / "grpo", on_batch=batches.append)

    adapters = tmp_path / "grpo" / "adapters"
    # synced before step 1 and after steps 1 and 2; the newest two kept
    assert sorted(p.name for p in adapters.iterdir()) == ["step-000001", "step-000002"]
    models = httpx.get(f"{lora_server.base_url}/models", timeout=30.0).json()["data"]
    assert {m["id"]: m.get("root") for m in models}[ADAPTER] == str((adapters / "step-000002").resolve())
    assert len(batches) == 2
    for batch in batches:
        for rollout in batch["rollouts"]:
            turns = rollout.record.turns
            assert turns
            assert all(t.model == ADAPTER and t.logprobs is not None for t in turns)
    assert result.metrics["groups"] == stage.max_steps * stage.groups_per_step  # 2 steps of 2 groups
    assert (result.model_dir / "config.json").is_file()


def test_a_lora_server_gets_runtime_adapter_loading(tiny_model: Path, tmp_path: Path) -> None:
    from visioncreator.policy.vllm import VLLMInstall, build_command

    install = VLLMInstall(python="python", version="0.32.0", cpu=True, cli=True)
    settings = server_settings(tmp_path / "log", lora=True, max_lora_rank=16, max_loras=2)
    argv, env = build_command(tiny_model, settings=settings, install=install, port=8000)
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert "--enable-lora" in argv
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    plain, plain_env = build_command(tiny_model, settings=server_settings(tmp_path / "log"), install=install, port=8000)
    assert "--enable-lora" not in plain
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in plain_env


def test_full_fine_tuning_cannot_be_served(tiny_model: Path, tmp_path: Path) -> None:
    full = PolicyModel(model=str(tiny_model))
    with pytest.raises(ServedRolloutsError, match=r"set policy\.lora"):
        ServedSession(ServedRollouts(base_url="http://127.0.0.1:9"), full, model_dir=tiny_model, output_dir=tmp_path)


def test_ray_workers_roll_out_against_the_server(lora_server: VLLMServer, tiny_model: Path, tmp_path: Path) -> None:
    import ray

    model = peft_model(tiny_model, seed=4)
    served = session(lora_server, tiny_model, tmp_path)
    served.sync(model, step=0)
    stage = GRPOStage(tasks=TASKS, num_generations=2, max_turns=2, max_completion_length=4096)
    settings = policy_settings(lora_server, model=ADAPTER, max_tokens=24)
    rollout = GraphRollout(
        stage=stage, policy=policy_model(tiny_model), store=tmp_path / "store", concurrency=2,
        collect_with=RayCollect(ServedPolicy(settings, tiny_model), workers=2),
    )  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = rollout(rollout_prompts(stage), _Trainer(model))
    finally:
        ray.shutdown()
    assert len(out["completion_ids"]) == 4
    assert [r.group for r in rollout.last] == [0, 0, 1, 1]
    assert len({r.record.task_id for r in rollout.last}) == 2
    for r in rollout.last:
        assert r.record.turns
        assert all(t.model == ADAPTER and t.completion_token_ids for t in r.record.turns)
    assert all(lp is not None for lp in out["logprobs"])
