"""The real vLLM CPU server, started once per session, and a policy whose turns it constrains to our format.

A tiny random model's text is meaningless, so every turn is constrained by a regular expression
(vLLM structured outputs) to a valid segment for its node: a one-step plan, a ``text_to_image``
call with a short prompt, an ``accept`` of the newest image, the answer. The graph, the ``openai``
back end, the token ids and log-probabilities are all real.

Needs ``.venv-vllm`` (``.ci/vllm-setup.sh``): without it the tests fail, they never skip.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from visioncreator.policy import (
    Answer,
    OpenAIPolicy,
    OpenAIPolicySettings,
    PlanStep,
    PolicyRequest,
    PolicyTurn,
    Reflection,
    TextSink,
    ToolCall,
    parse_observations,
    write_answer,
    write_plan,
    write_reflect,
    write_tool_call,
)
from visioncreator.policy.vllm import VLLMServer, VLLMServerSettings, serve_policy
from visioncreator.tool_servers import POLICY_TOOLS

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
WORDS = "[a-z][a-z ]{0,19}"
"""What a constrained goal or prompt may say: 1-20 lower-case letters and spaces."""
_SLOT = "SLOTSLOT"
_HANDLE = "img_" + "0" * 24


def vllm_python() -> Path:
    """The interpreter of .venv-vllm, or a test failure that says how to make it."""
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run .ci/vllm-setup.sh (the vLLM tests need the real server)")
    return VLLM_PYTHON


def server_settings(log_file: Path, **overrides: Any) -> VLLMServerSettings:
    """Launcher settings for the tests and benchmarks."""
    base: dict[str, Any] = {
        "python": str(vllm_python()),
        "log_file": log_file,
        "max_model_len": 8192,
        # tool_choice="required" with a random model: let the hermes parser read what the grammar allows.
        "env": {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"},
        "startup_timeout_s": 240.0,
    }
    return VLLMServerSettings(**(base | overrides))


def build_model(out_dir: Path) -> Path:
    """The project's tiny random chat model (our chat template, a trained BPE tokenizer)."""
    from visioncreator.policy import build_tiny_lm

    return build_tiny_lm(tool_names=POLICY_TOOLS, out_dir=out_dir)


def warm_up(server: VLLMServer) -> None:
    """One request with log-probabilities and a regex: the first of each costs seconds once."""
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "logprobs": True,
        "structured_outputs": {"regex": WORDS},
    }
    httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120.0).raise_for_status()


# ---- constrained turns ---------------------------------------------------------------------


def _pattern(literal: str) -> str:
    """A regex matching ``literal`` with every slot replaced by :data:`WORDS`."""
    return re.escape(literal).replace(_SLOT, WORDS)


PLAN_RE = _pattern(write_plan([PlanStep(step=1, goal=_SLOT, tool="text_to_image")]))
CALL_RE = _pattern(write_tool_call(ToolCall(name="text_to_image", arguments={"prompt": _SLOT}, step=1)))


def _with_handle(literal: str, handle: str) -> str:
    return re.escape(literal.replace(_HANDLE, handle))


def new_images(request: PolicyRequest) -> list[str]:
    """Handles made by tool calls so far, oldest first."""
    found: list[str] = []
    for m in request.messages:
        if m.role == "tool":
            found += [
                str(o.result["handle"]) for o in parse_observations(m) if o.ok and o.result and "handle" in o.result
            ]
    return found


def constraint(request: PolicyRequest) -> str:
    """The regex a turn of ``request.node`` must match: plan, call, accept the newest image, answer."""
    images = new_images(request)
    if request.node == "plan":
        return PLAN_RE
    if request.node == "reflect" and images:
        return _with_handle(write_reflect(Reflection(verdict="accept", image=_HANDLE)), images[-1])
    if request.node in ("act", "finish") and images:
        return _with_handle(write_answer(Answer(images=(_HANDLE,))), images[-1])
    return CALL_RE


class ConstrainedPolicy:
    """An :class:`OpenAIPolicy` per turn, its ``extra_body`` carrying that turn's regex.

    The settings are frozen and the regex depends on the conversation (the newest handle), so
    each turn gets its own short-lived policy; the server, the wire format and the records are
    those of the real back end.
    """

    def __init__(self, settings: OpenAIPolicySettings) -> None:
        self.settings = settings
        self.name = settings.policy_name

    def _policy(self, request: PolicyRequest) -> OpenAIPolicy:
        extra = self.settings.extra_body | {"structured_outputs": {"regex": constraint(request)}}
        return OpenAIPolicy(self.settings.model_copy(update={"extra_body": extra}))

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        async with self._policy(request) as policy:
            return await policy.respond(request)

    async def sample(self, request: PolicyRequest, n: int) -> list[PolicyTurn]:
        async with self._policy(request) as policy:
            return await policy.sample(request, n)

    async def respond_streaming(self, request: PolicyRequest, on_text: TextSink) -> PolicyTurn:
        async with self._policy(request) as policy:
            return await policy.respond_streaming(request, on_text)


def policy_settings(server: VLLMServer, **overrides: Any) -> OpenAIPolicySettings:
    """Settings of the ``openai`` back end for the test server: short turns, text only, ids and logprobs on."""
    base: dict[str, Any] = {
        "base_url": server.base_url,
        "model": server.model,
        "max_tokens": 96,
        "send_images": False,
        "timeout_s": 120.0,
        "seed": 1234,
    }
    return OpenAIPolicySettings(**(base | overrides))


@contextmanager
def running_server(work_dir: Path, **overrides: Any) -> Iterator[VLLMServer]:
    """Build the tiny model under ``work_dir``, serve it, warm it up (for tests and benchmarks)."""
    model = build_model(work_dir / "tiny-lm")
    with serve_policy(model, settings=server_settings(work_dir / "vllm.log", **overrides)) as server:
        warm_up(server)
        yield server


def scrape(server: VLLMServer, *names: str) -> dict[str, float]:
    """Counters from the server's Prometheus ``/metrics``, summed over labels, by name."""
    text = httpx.get(f"{server.url}/metrics", timeout=30.0).text
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    with serve_policy(tiny_model, settings=server_settings(log)) as server:
        warm_up(server)
        yield server
