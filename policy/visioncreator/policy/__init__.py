"""visioncreator.policy: the policy protocol, the canonical text format, and the scripted expert.

Importing the face is cheap: the HTTP policy (httpx) and the local one (its tokenizer helpers)
load on first use of one of their names (PEP 562 ``__getattr__``), so a run with the scripted
expert never imports them.
"""

import importlib
from typing import TYPE_CHECKING, Any

from visioncreator.policy.chat_template import CHAT_TEMPLATE, END_OF_TURN, chat_messages, first_divergence
from visioncreator.policy.errors import (
    FormatWriteError,
    MissingTaskError,
    PolicyConnectionError,
    PolicyContextError,
    PolicyContextLengthError,
    PolicyError,
    PolicyHTTPError,
    PolicyResponseError,
    PolicyResponseTooLargeError,
    PolicyTimeoutError,
    PolicyTransportError,
)
from visioncreator.policy.expert import Critic, ExpertConfig, ExpertPolicy, ToolRoles
from visioncreator.policy.format import (
    SEGMENT_KINDS,
    parse_turn,
    to_tool_call,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)
from visioncreator.policy.prompting import (
    NODE_INSTRUCTIONS,
    SYSTEM_TEMPLATE,
    Observation,
    error_message,
    node_instruction,
    observation_message,
    parse_observations,
    parse_task,
    system_message,
    task_message,
)
from visioncreator.policy.scripted import Script, ScriptedPolicy
from visioncreator.policy.types import (
    Answer,
    FormatError,
    FormatErrorCode,
    Message,
    Node,
    ParsedTurn,
    Plan,
    PlanStep,
    Policy,
    PolicyRequest,
    PolicyTurn,
    Reflection,
    Role,
    Segment,
    SegmentKind,
    SegmentValue,
    Split,
    StreamingPolicy,
    Task,
    TextSink,
    ToolCall,
    ToolSpec,
    Verdict,
)

if TYPE_CHECKING:
    from visioncreator.policy.local import (
        LocalPolicySettings,
        SmolLMUnavailableError,
        TransformersPolicy,
        TransformersVLMPolicy,
        build_tiny_lm,
        corpus_tools,
        load_smollm,
        staged_dir,
    )
    from visioncreator.policy.openai import ClosingClient, ImageSource, OpenAIPolicy, OpenAIPolicySettings, TokenPolicy
    from visioncreator.policy.vllm import VLLMServer, VLLMServerSettings, load_lora_adapter, serve_policy

__all__ = [
    "CHAT_TEMPLATE",
    "END_OF_TURN",
    "NODE_INSTRUCTIONS",
    "SEGMENT_KINDS",
    "SYSTEM_TEMPLATE",
    "Answer",
    "ClosingClient",
    "Critic",
    "ExpertConfig",
    "ExpertPolicy",
    "FormatError",
    "FormatErrorCode",
    "FormatWriteError",
    "ImageSource",
    "LocalPolicySettings",
    "Message",
    "MissingTaskError",
    "Node",
    "Observation",
    "OpenAIPolicy",
    "OpenAIPolicySettings",
    "ParsedTurn",
    "Plan",
    "PlanStep",
    "Policy",
    "PolicyConnectionError",
    "PolicyContextError",
    "PolicyContextLengthError",
    "PolicyError",
    "PolicyHTTPError",
    "PolicyRequest",
    "PolicyResponseError",
    "PolicyResponseTooLargeError",
    "PolicyTimeoutError",
    "PolicyTransportError",
    "PolicyTurn",
    "Reflection",
    "Role",
    "Script",
    "ScriptedPolicy",
    "Segment",
    "SegmentKind",
    "SegmentValue",
    "SmolLMUnavailableError",
    "Split",
    "StreamingPolicy",
    "Task",
    "TextSink",
    "TokenPolicy",
    "ToolCall",
    "ToolRoles",
    "ToolSpec",
    "TransformersPolicy",
    "TransformersVLMPolicy",
    "VLLMServer",
    "VLLMServerSettings",
    "Verdict",
    "build_tiny_lm",
    "chat_messages",
    "corpus_tools",
    "error_message",
    "first_divergence",
    "load_lora_adapter",
    "load_smollm",
    "node_instruction",
    "observation_message",
    "parse_observations",
    "parse_task",
    "parse_turn",
    "serve_policy",
    "staged_dir",
    "system_message",
    "task_message",
    "to_tool_call",
    "write_answer",
    "write_plan",
    "write_reflect",
    "write_think",
    "write_tool_call",
    "write_turn",
]

_LAZY = {
    "LocalPolicySettings": "local",
    "SmolLMUnavailableError": "local",
    "TransformersPolicy": "local",
    "TransformersVLMPolicy": "local",
    "build_tiny_lm": "local",
    "corpus_tools": "local",
    "load_smollm": "local",
    "staged_dir": "local",
    "ImageSource": "openai",
    "OpenAIPolicy": "openai",
    "OpenAIPolicySettings": "openai",
    "TokenPolicy": "openai",
    "ClosingClient": "openai",
    "VLLMServer": "vllm",
    "VLLMServerSettings": "vllm",
    "load_lora_adapter": "vllm",
    "serve_policy": "vllm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
