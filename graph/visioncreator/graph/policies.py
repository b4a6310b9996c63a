"""Pick the policy the CLI runs: the scripted expert, a served model by URL, or a local model directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from visioncreator.graph.client import ToolClient
from visioncreator.graph.errors import PolicyChoiceError
from visioncreator.policy import Policy


def _reason(exc: BaseException) -> str:
    """The exception as a reason a person can act on: its type always, and its text or its cause's."""
    text = str(exc) or str(exc.__cause__ or exc.__context__ or "") or "no details"
    return f"{type(exc).__name__}: {text}"


async def served_model(base_url: str, *, timeout_s: float = 10.0) -> str:
    """The first model an OpenAI-compatible server serves (``GET /models``).

    Raises:
        PolicyChoiceError: The server cannot be reached, answers an error, or lists no model.

    """
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
            response = await http.get(url)
            response.raise_for_status()
            data = response.json()
            models = (data.get("data") if isinstance(data, dict) else None) or []
            first = models[0]["id"] if models else None
    # Some httpx errors (a refused connection among them) have an empty text: the type names them.
    except (httpx.HTTPError, ValueError, LookupError, TypeError) as exc:
        raise PolicyChoiceError(f"cannot list the models of {url}: {_reason(exc)}; pass --model") from exc
    if first is None:
        raise PolicyChoiceError(f"{url} serves no model; pass --model")
    return str(first)


@asynccontextmanager
async def open_policy(
    spec: str,
    *,
    tools: ToolClient,
    seed: int = 0,
    model: str | None = None,
    max_tokens: int = 1024,
    timeout_s: float | None = None,
    max_retries: int | None = None,
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
        timeout_s: A URL policy's longest wait for one answer (``OpenAIPolicySettings.timeout_s``);
            ``None``: its default.
        max_retries: A URL policy's retries on connection errors and HTTP 5xx
            (``OpenAIPolicySettings.max_retries``); ``None``: its default.
    """
    if spec == "expert":
        from visioncreator.graph.offline import expert_policy
        from visioncreator.policy import ExpertConfig

        yield expert_policy(ExpertConfig(seed=seed))
        return
    if spec.startswith(("http://", "https://")):
        from visioncreator.policy import OpenAIPolicy, OpenAIPolicySettings

        name = model or await served_model(spec)
        given = {"timeout_s": timeout_s, "max_retries": max_retries}
        settings = OpenAIPolicySettings(
            base_url=spec,
            model=name,
            seed=seed,
            max_tokens=max_tokens,
            **{key: value for key, value in given.items() if value is not None},
        )
        async with OpenAIPolicy(settings, images=tools) as policy:
            yield policy
        return
    if Path(spec).is_dir():  # noqa: ASYNC240 - one stat at start-up
        from visioncreator.policy import LocalPolicySettings, TransformersPolicy

        yield TransformersPolicy(spec, settings=LocalPolicySettings(seed=seed, max_new_tokens=max_tokens), images=tools)
        return
    raise PolicyChoiceError(f"--policy {spec!r}: expected 'expert', an http(s):// URL or a model directory")
