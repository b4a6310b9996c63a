"""Settings of the OpenAI-compatible policy back end (:class:`~visioncreator.policy.openai.OpenAIPolicy`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from visioncreator.policy.types import Node

__all__ = ["OpenAIPolicySettings"]

ToolMode = Literal["tags", "native"]


class OpenAIPolicySettings(BaseModel):
    """How to reach an OpenAI-compatible chat endpoint, how to sample, and how to send images.

    Defaults suit a vLLM server (token ids and log-probabilities on, for RL). For a hosted API
    that rejects unknown fields, set ``return_token_ids=False``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- endpoint --------------------------------------------------------------------------
    base_url: str = Field(
        min_length=1,
        description="API root including the version, e.g. 'http://127.0.0.1:8000/v1'; "
        "requests go to '{base_url}/chat/completions'.",
    )
    model: str = Field(min_length=1, description="The served model name, sent as 'model'.")
    api_key: str | None = Field(
        default=None, repr=False, description="Sent as 'Authorization: Bearer ...' when set; never logged."
    )
    name: str | None = Field(default=None, description="Policy name recorded in turns; default 'openai:{model}'.")
    trust_env: bool = Field(
        default=False, description="Read proxy settings from the environment (off: loopback servers stay direct)."
    )
    max_connections: int = Field(default=64, ge=1, description="Most concurrent connections to the server.")

    # ---- time limits and retries -----------------------------------------------------------
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest wait for one request's answer once connected (read timeout and "
        "the bound on one whole attempt). A timeout is not retried: the generation would start over.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait to open a connection.")
    max_retries: int = Field(
        default=3, ge=0, description="Retries after the first attempt, on connection errors and HTTP 5xx only."
    )
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubled on each further retry.")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Cap on one retry delay.")

    # ---- response size ---------------------------------------------------------------------
    max_response_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest response body read (the body is streamed; reading stops past it and the turn "
        "fails with PolicyResponseTooLargeError, not retried). A completion costs about 100 bytes per token "
        "with token ids and log-probabilities (plus ~55 per top_logprobs alternative): n=16 choices of "
        "max_tokens=1024 make about 1.6 MB, five times under the default. Raise it with top_logprobs, or "
        "when n x max_tokens exceeds ~80,000.",
    )
    max_error_body_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        description="Most bytes read of an error answer (HTTP 4xx/5xx) to find the server's message; the rest "
        "is not read.",
    )
    max_chars_per_token: int = Field(
        default=64,
        ge=1,
        description="Longest text one completion token may stand for. A choice whose text is longer than "
        "max_tokens x this (65,536 characters at the defaults) is refused as PolicyResponseTooLargeError, as "
        "is one with more token ids or log-probabilities than max_tokens, or a 'usage.completion_tokens' over "
        "n x max_tokens: the server ignored the limit it was sent.",
    )

    # ---- sampling --------------------------------------------------------------------------
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=1024, ge=1, description="Most completion tokens per turn.")
    stop: tuple[str, ...] = Field(default=(), description="Stop strings.")
    seed: int | None = Field(
        default=None,
        description="Base seed. With it or the request's run seed, each turn sends a seed derived from both, "
        "the node and the conversation length: reproducible per turn, different between turns.",
    )
    logprobs: bool = Field(default=True, description="Ask for the log-probability of every completion token.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="Also ask for this many alternatives.")
    return_token_ids: bool = Field(
        default=True,
        description="Send vLLM's 'return_token_ids: true' so prompt and completion token ids come back "
        "('prompt_token_ids' on the response, 'token_ids' on each choice).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged last into every request body, e.g. 'structured_outputs', 'chat_template_kwargs', "
        "'top_k', 'repetition_penalty'.",
    )

    # ---- conversation ----------------------------------------------------------------------
    tool_mode: ToolMode = Field(
        default="tags",
        description="'tags': tool calls are <tool_call> segments in plain text (the canonical format). "
        "'native': tools go as OpenAI 'tools=', native tool calls come back and are written into the turn "
        "text as <tool_call> segments; observations go back as 'tool' messages paired by call id.",
    )
    tool_choice: Literal["auto", "required"] = Field(
        default="auto",
        description="Native mode: 'tool_choice' sent on the 'act' node ('auto' on other nodes). 'required' makes "
        "weak or random models call tools, but leaves no way to <answer> from 'act': the run then ends by budget.",
    )
    native_tool_nodes: tuple[Node, ...] = Field(
        default=("act", "reflect"), description="Native mode: the nodes whose requests carry 'tools='."
    )
    append_node_instruction: bool = Field(
        default=True,
        description="Add the node's one-line instruction (prompting.node_instruction) as a user line before "
        "the turn, and keep it before every earlier assistant turn of that node, so the model knows which "
        "segment to write and prompts stay prefixes of each other.",
    )
    on_context_overflow: Literal["turn", "raise"] = Field(
        default="turn",
        description="When the server refuses the prompt as too long (HTTP 400): 'turn' returns an empty turn "
        "whose parse error says so (the graph ends the run by its format-error budget, trajectory kept); "
        "'raise' raises PolicyContextLengthError.",
    )

    # ---- images ----------------------------------------------------------------------------
    send_images: bool = Field(
        default=True,
        description="Send message images as 'image_url' data URIs (needs an ImageSource; text-only models "
        "should turn this off or get no ImageSource).",
    )
    image_max_side: int = Field(default=768, ge=16, description="Longest side, in pixels, of an image sent.")
    image_format: Literal["JPEG", "PNG"] = Field(
        default="JPEG",
        description="Encoding of images sent. JPEG: ~7x faster to encode and ~3x smaller than PNG at 768 px; "
        "PNG: lossless.",
    )
    image_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality.")
    max_image_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="Largest image file accepted.")
    max_image_pixels: int = Field(default=64_000_000, ge=1, description="Largest decoded image (width x height).")
    image_cache_size: int = Field(
        default=256, ge=0, description="Encoded images kept per policy (handles are content hashes)."
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def policy_name(self) -> str:
        """The name recorded in turns."""
        return self.name or f"openai:{self.model}"

    @property
    def chat_url(self) -> str:
        """The chat completions endpoint."""
        return f"{self.base_url}/chat/completions"
