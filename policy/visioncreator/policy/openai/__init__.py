"""The OpenAI-compatible policy back end: the HTTP client, its settings and the message encoding."""

from visioncreator.policy.openai.client import ClosingClient
from visioncreator.policy.openai.messages import (
    TOOL_RESULTS_PREFIX,
    ImageSource,
    encode_image,
    native_tools,
    to_chat_messages,
    turn_text,
)
from visioncreator.policy.openai.policy import OpenAIPolicy, turn_seed
from visioncreator.policy.openai.settings import OpenAIPolicySettings
from visioncreator.policy.openai.tokens import TokenPolicy

__all__ = [
    "TOOL_RESULTS_PREFIX",
    "ClosingClient",
    "ImageSource",
    "OpenAIPolicy",
    "OpenAIPolicySettings",
    "TokenPolicy",
    "encode_image",
    "native_tools",
    "to_chat_messages",
    "turn_seed",
    "turn_text",
]
