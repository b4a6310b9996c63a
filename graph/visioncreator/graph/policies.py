"""Pick the policy the CLI runs: the scripted expert, a served model by URL, or a local model directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from visioncreator.graph.client import ToolClient
from visioncreator.graph.errors import PolicyChoiceError
from visioncreator.policy import Policy


async def served_model(base_url: str, *, timeout_s: float = 10.0) -> str:
    """The first model an OpenAI-compatible server serves (``GET /models``)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            response = await http.get(f"{base_url.rstrip('/')}/models")
            response.raise_for_status()
            models = response.json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        raise PolicyChoiceError(f"cannot list the models of {base_url}: {exc}; pass --model") from exc
    if not models:
        raise PolicyChoiceError(f"{base_url} serves no model")
    return str(models[0]["id"])


@asynccontextmanager
async def open_policy(
    spec: str, *, tools: ToolClient, seed: int = 0, model: str | None = None, max_tokens: int = 1024
) -> AsyncIterator[Policy]:
    """The policy ``spec`` names, open for the duration of the block.

    Args:
        spec: ``expert`` (the scripted teacher of the synthetic environment), an ``http(s)://``
            base URL of an OpenAI-compatible server (vLLM: ``http://127.0.0.1:8000/v1``), or a
            local Hugging Face model directory (run in-process with transformers).
        tools: The connected tool client; HTTP and local policies read images through it.
        seed: Seed of the run.
        model: Served model name for a URL (default: the server's first model).
        max_tokens: Most tokens per turn of a URL or local policy.
    """
    if spec == "expert":
        from visioncreator.graph.offline import expert_policy
        from visioncreator.policy import ExpertConfig

        yield expert_policy(ExpertConfig(seed=seed))
        return
    if spec.startswith(("http://", "https://")):
        from visioncreator.policy import OpenAIPolicy, OpenAIPolicySettings

        name = model or await served_model(spec)
        async with OpenAIPolicy(
            OpenAIPolicySettings(base_url=spec, model=name, seed=seed, max_tokens=max_tokens), images=tools
        ) as policy:
            yield policy
        return
    if Path(spec).is_dir():  # noqa: ASYNC240 - one stat at start-up
        from visioncreator.policy import LocalPolicySettings, TransformersPolicy

        yield TransformersPolicy(spec, settings=LocalPolicySettings(seed=seed, max_new_tokens=max_tokens), images=tools)
        return
    raise PolicyChoiceError(f"--policy {spec!r}: expected 'expert', an http(s):// URL or a model directory")
