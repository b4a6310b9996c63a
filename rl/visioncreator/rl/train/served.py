"""GRPO rollouts from the served policy: the vLLM server, LoRA adapters synced after every optimiser step.

With ``GRPOStage.rollouts = "served"`` the graph's policy turns come from a vLLM server through
:class:`~visioncreator.policy.OpenAIPolicy` (token ids and log-probabilities recorded per turn)
instead of a local :class:`~visioncreator.policy.TransformersPolicy` over the trainer's model.
The turns go as token ids over ``/v1/completions`` (:class:`~visioncreator.policy.TokenPolicy`: the
prompt rendered and stitched here with the trainer's tokenizer), so each turn's prompt extends the
previous turn's exact ids, as training needs; the chat endpoint re-tokenizes and breaks that chain.
The server keeps the start model as its base and serves the trainer's LoRA adapter under one name
(:attr:`ServedRollouts.adapter_name`), which every rollout request sends as its ``model``:

1. before the first step (and after a resume), and after every optimiser step, :class:`ServedSession`
   saves the adapter (peft ``save_pretrained``) to a new folder ``adapters/step-NNNNNN`` and loads
   it into the running server in place (``POST /v1/load_lora_adapter``, ``load_inplace``; vLLM
   started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``). A new folder per
   version matters: vLLM keys its prefix cache by the adapter's path, so the same path again would
   reuse KV blocks computed with the previous weights. Loading takes ~40 ms for the tiny model on
   this CPU; nothing restarts.
2. rollouts then run with the new weights; requests in flight during a load finish with the old.

Full fine-tuning cannot be synced this way (a full-weight reload means a restart or vLLM's
``collective_rpc`` weight transfer, neither a default here): served rollouts need ``policy.lora``.

Rollout workers can be Ray actors (:attr:`ServedRollouts.ray_workers`): each actor builds its own
``OpenAIPolicy`` against the same server and its own synthetic tool server on the rollout's shared
image store (:class:`RayCollect`, over :func:`visioncreator.rl.collection.ray.collect_ray`).

Sampling and log-probabilities: vLLM returns the raw model's log-probabilities (its default
``logprobs_mode``), which are what TRL recomputes at temperature 1; with another temperature they
differ by the temperature scaling (TRL's own recomputation is used for the loss either way).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from visioncreator.graph import ToolClient
from visioncreator.policy import OpenAIPolicySettings, Policy, TokenPolicy
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask, TrajectoryRecord
from visioncreator.rl.errors import RLError

__all__ = [
    "ADAPTERS_SUBDIR",
    "RayCollect",
    "SamplingSpec",
    "ServedPolicy",
    "ServedRollouts",
    "ServedRolloutsError",
    "ServedSession",
]

_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM 0.32 accepts

ADAPTERS_SUBDIR = "adapters"
"""Where a stage's synced adapters go, under its output folder."""


class ServedRolloutsError(RLError):
    """Served rollouts that cannot run (no LoRA to sync, a server without LoRA); the message says why."""


class ServedRollouts(BaseModel):
    """How GRPO takes its rollouts from a vLLM server (``GRPOStage.rollouts = "served"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(
        default=None,
        description="Root URL (http://host:port) of a running vLLM server of the start model, started with LoRA "
        "enabled (VLLMServerSettings.lora); None starts one for the stage and stops it after.",
    )
    api_key: str | None = Field(default=None, description="Bearer token of that server.")
    adapter_name: str = Field(default="policy", min_length=1, description="Name the trainer's adapter is served as.")
    server: dict[str, Any] = Field(
        default_factory=dict, description="VLLMServerSettings fields for the server the stage starts (lora is set)."
    )
    openai: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAIPolicySettings fields of the rollouts' policy, over those derived from the PolicyModel "
        "(temperature, top_p, max_tokens, model = adapter_name).",
    )
    group_window_s: float = Field(
        default=0.05,
        ge=0.0,
        description="Turns of one prompt asked within this window share one request with n (a group's first turn; "
        "TokenPolicy.group_window_s); 0: one request per turn.",
    )
    keep_adapters: int = Field(default=2, ge=1, description="Synced adapter folders kept on disk (the newest).")
    load_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for the server to load an adapter.")
    ray_workers: int = Field(
        default=0, ge=0, description="Roll out on this many Ray actors, each with its own client (0: in-process)."
    )
    ray_address: str = Field(default="local", description="Ray cluster address, or `local` (a local cluster).")


class ServedPolicy:
    """A picklable ``tools -> Policy`` factory for Ray workers: a :class:`~visioncreator.policy.TokenPolicy`.

    Args:
        settings: Endpoint and sampling.
        tokenizer_dir: A folder with the served model's tokenizer (each worker loads it once).

    """

    def __init__(self, settings: OpenAIPolicySettings, tokenizer_dir: str | Path, group_window_s: float = 0.0) -> None:
        self.settings = settings
        self.tokenizer_dir = str(tokenizer_dir)
        self.group_window_s = group_window_s

    def __call__(self, tools: ToolClient) -> Policy:
        """The policy (text only: it reads image handles, not bytes)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return TokenPolicy(self.settings, tokenizer, group_window_s=self.group_window_s)


@dataclass(frozen=True)
class RayCollect:
    """``GraphRollout.collect_with``: a rollout's collection on Ray actors (see the module docstring)."""

    policy: Any
    """A picklable ``tools -> Policy`` factory (e.g. :class:`ServedPolicy`), or a :class:`ServedSession`,
    whose current :attr:`~ServedSession.policy_settings` each collection sends as a :class:`ServedPolicy`."""
    workers: int = 2
    address: str = "local"

    async def __call__(self, tasks: Sequence[CollectTask], config: CollectConfig) -> list[TrajectoryRecord]:
        """Collect ``config.group_size`` trajectories per task on the actors; task-major, sample order."""
        from visioncreator.rl.collection.ray import collect_ray

        policy = self.policy
        if isinstance(policy, ServedSession):
            policy = ServedPolicy(policy.policy_settings, policy.model_dir, policy.spec.group_window_s)
        return await collect_ray(tasks, policy=policy, config=config, address=self.address, workers=self.workers)


class SamplingSpec(Protocol):
    """What the session reads of the trained policy (a :class:`~visioncreator.rl.train.config.PolicyModel`)."""

    @property
    def lora(self) -> Any:
        """The LoRA spec (``r``), or None for full fine-tuning."""

    @property
    def temperature(self) -> float:
        """Sampling temperature of rollouts."""

    @property
    def top_p(self) -> float:
        """Nucleus mass of rollouts."""

    @property
    def max_new_tokens(self) -> int:
        """Most tokens per turn."""


class ServedSession:
    """One stage's served rollouts: the server, the rollouts' policy, and the adapter sync.

    A context manager: entering starts the server (unless ``spec.base_url`` names a running one),
    leaving stops it. :meth:`sync` saves and loads the adapter; :meth:`callback` does it before the
    first step and after every optimiser step.

    Args:
        spec: The stage's served settings.
        policy: The trained policy's sampling settings and LoRA spec.
        model_dir: The start model: the base weights the server holds.
        output_dir: The stage's folder; adapters go under ``adapters/``.

    Raises:
        ServedRolloutsError: ``policy.lora`` is None (full weights cannot be synced at run time).

    """

    def __init__(self, spec: ServedRollouts, policy: SamplingSpec, *, model_dir: Path, output_dir: Path) -> None:
        if policy.lora is None:
            raise ServedRolloutsError(
                "served rollouts sync the trainer's LoRA adapter into vLLM after every step: set policy.lora "
                "(full fine-tuning would need a restart or a full-weight transfer per step)"
            )
        self.spec = spec
        self.model_dir = model_dir
        self.adapters_dir = output_dir / ADAPTERS_SUBDIR
        self.lora_rank = int(policy.lora.r)
        self.sampling = {"temperature": policy.temperature, "top_p": policy.top_p, "max_tokens": policy.max_new_tokens}
        self.base_url = spec.base_url
        """The server's root URL (set on entering when the session starts the server)."""
        self.server: Any = None
        """The :class:`~visioncreator.policy.VLLMServer` the session started, if it did."""
        self.synced: list[Path] = []
        """Adapter folders loaded so far, oldest first (those still on disk are the last ``keep_adapters``)."""

    @classmethod
    def attach(
        cls, stage: Any, policy: SamplingSpec, rollout: Any, *, model_dir: Path, output_dir: Path
    ) -> ServedSession | None:
        """The session of a GRPO stage with ``rollouts="served"``, made the rollout's policy; None for local rollouts.

        Args:
            stage: The :class:`~visioncreator.rl.train.config.GRPOStage` (its ``rollouts`` and ``served``).
            policy: The trained policy.
            rollout: The stage's :class:`~visioncreator.rl.train.rollout.GraphRollout`: its
                ``policy_factory`` and ``collect_with`` become the session's.
            model_dir: The start model.
            output_dir: The stage's folder.

        """
        if stage.rollouts != "served":
            return None
        session = cls(stage.served, policy, model_dir=model_dir, output_dir=output_dir)
        rollout.policy_factory, rollout.collect_with = session.policy_factory, session.collect_with()
        return session

    def __enter__(self) -> ServedSession:
        from visioncreator.policy import VLLMServerSettings, serve_policy

        if self.base_url is None:
            rank = next((r for r in _LORA_RANKS if r >= self.lora_rank), self.lora_rank)
            fields = {"max_lora_rank": rank, "api_key": self.spec.api_key} | self.spec.server | {"lora": True}
            self.server = serve_policy(self.model_dir, settings=VLLMServerSettings(**fields))
            self.base_url = self.server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server the session started (a given one is left running)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.base_url = self.spec.base_url

    @property
    def policy_settings(self) -> OpenAIPolicySettings:
        """What every rollout turn is sent with: ``model`` is the adapter's name."""
        if self.base_url is None:
            raise ServedRolloutsError("the served session has no server yet: enter it first")
        base = {
            "base_url": f"{self.base_url.rstrip('/')}/v1",
            "model": self.spec.adapter_name,
            "api_key": self.spec.api_key,
            "seed": 0,
            "send_images": False,
        }
        return OpenAIPolicySettings(**(base | self.sampling | self.spec.openai))

    def policy_factory(self, model: Any, tokenizer: Any) -> Policy:
        """``GraphRollout.policy_factory``: the served policy (the trainer's weights reach it by :meth:`sync`)."""
        text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a VLM processor's
        return TokenPolicy(self.policy_settings, text_tokenizer, group_window_s=self.spec.group_window_s)

    def collect_with(self) -> RayCollect | None:
        """``GraphRollout.collect_with``: Ray actors when ``ray_workers`` is set, else None (in-process)."""
        if not self.spec.ray_workers:
            return None
        return RayCollect(self, workers=self.spec.ray_workers, address=self.spec.ray_address)

    def sync(self, model: Any, step: int) -> Path:
        """Save ``model``'s LoRA adapter as ``adapters/step-NNNNNN`` and load it into the server in place.

        Raises:
            ServedRolloutsError: ``model`` has no LoRA adapter.
            VLLMServerError: The server refused it.

        """
        from peft import PeftModel

        from visioncreator.policy import load_lora_adapter

        if not isinstance(model, PeftModel):
            raise ServedRolloutsError(
                "served rollouts sync LoRA adapters: the trained model has none (set policy.lora)"
            )
        if self.base_url is None:
            raise ServedRolloutsError("the served session has no server yet: enter it first")
        folder = self.adapters_dir / f"step-{step:06d}"
        if folder.exists():
            shutil.rmtree(folder)  # a resumed run redoing a step: a fresh folder, never stale files
        model.save_pretrained(str(folder))
        load_lora_adapter(
            self.base_url, self.spec.adapter_name, folder, api_key=self.spec.api_key, timeout_s=self.spec.load_timeout_s
        )
        self.synced.append(folder)
        for old in self.synced[: -self.spec.keep_adapters]:
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def callback(self) -> Any:
        """A ``TrainerCallback`` that syncs before the first step and after every optimiser step."""
        from transformers import TrainerCallback

        session = self

        class _Sync(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
                session.sync(_unwrapped(model), int(state.global_step))

            def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
                session.sync(_unwrapped(model), int(state.global_step))

        return _Sync()


def _unwrapped(model: Any) -> Any:
    """The model under DDP or other wrappers that keep it as ``.module``."""
    while hasattr(model, "module") and not hasattr(model, "peft_config"):
        model = model.module
    return model
