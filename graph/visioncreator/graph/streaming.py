"""Policy turns on LangGraph's ``messages`` stream, token by token, as LangChain message chunks.

LangGraph's ``stream_mode="messages"`` listens to chat-model callbacks: a run opened with
``on_chat_model_start`` (whose metadata names the node), ``on_llm_new_token`` with a
``ChatGenerationChunk`` per token, ``on_llm_end``. The policy is not a LangChain chat model, so
the policy node opens such a run itself, through the callbacks of the node's own config, and
forwards each piece of text a :class:`~visioncreator.policy.StreamingPolicy` hands out as an
``AIMessageChunk``. A policy that cannot stream (the scripted expert) sends its whole turn as
one chunk. All chunks of a turn share one message id.

Nothing of this runs unless a streaming consumer is attached: the test is LangChain's own for
its chat models (a handler with ``tap_output_aiter``, which the ``messages`` mode's handler and
``astream_events``' have). Without one, the node asks the policy for a plain, non-streamed turn.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any
from uuid import uuid4

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackManager
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
from langchain_core.runnables.config import get_async_callback_manager_for_config
from langgraph.config import get_config

from visioncreator.policy import Message, Policy, PolicyRequest, PolicyTurn, StreamingPolicy

__all__ = ["respond", "respond_on_stream", "token_listeners"]


def _streams(handler: object) -> bool:
    # LangChain's _StreamingCallbackHandler protocol, the test BaseChatModel applies to stream.
    return callable(getattr(handler, "tap_output_aiter", None))


def token_listeners() -> AsyncCallbackManager | None:
    """The current node's callbacks if one of them streams tokens (``messages`` mode), else ``None``."""
    try:
        config = get_config()
    except RuntimeError:  # not inside a graph run
        return None
    callbacks = config.get("callbacks")
    handlers = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else callbacks or ()
    if not any(_streams(h) for h in handlers):
        return None
    return get_async_callback_manager_for_config(config)


def respond(policy: Policy, request: PolicyRequest) -> Awaitable[PolicyTurn]:
    """The policy's turn for ``request``: streamed on the ``messages`` stream when someone listens, else plain."""
    listening = token_listeners()
    if listening is None:
        return policy.respond(request)
    return respond_on_stream(policy, request, listening)


def _chat_message(message: Message) -> BaseMessage:
    if message.role == "system":
        return SystemMessage(message.content)
    if message.role == "user":
        return HumanMessage(message.content)
    if message.role == "assistant":
        return AIMessage(message.content)
    return ChatMessage(content=message.content, role=message.role)


async def respond_on_stream(policy: Policy, request: PolicyRequest, callbacks: AsyncCallbackManager) -> PolicyTurn:
    """One policy turn as a chat-model run of ``callbacks``: its text streamed as ``AIMessageChunk``s.

    Args:
        policy: The policy; a :class:`~visioncreator.policy.StreamingPolicy` streams its turn,
            any other sends it as one chunk when it is done.
        request: The turn's request.
        callbacks: From :func:`token_listeners`.

    Returns:
        The policy's turn, as :meth:`~visioncreator.policy.Policy.respond` gives it.

    Raises:
        Whatever the policy raises (the run is closed with ``on_llm_error``).

    """
    run_id = uuid4()
    message_id = f"run-{run_id}"
    runs = await callbacks.on_chat_model_start(
        {"name": policy.name},
        [[_chat_message(m) for m in request.messages]],
        run_id=run_id,
        name=policy.name,
        invocation_params={"policy": policy.name, "node": request.node},
    )
    run = runs[0]

    async def on_text(piece: str) -> None:
        chunk = AIMessageChunk(content=piece, id=message_id)
        await run.on_llm_new_token(piece, chunk=ChatGenerationChunk(message=chunk))

    try:
        if isinstance(policy, StreamingPolicy):
            turn = await policy.respond_streaming(request, on_text)
        else:
            turn = await policy.respond(request)
            if turn.text:
                await on_text(turn.text)
    except BaseException as exc:
        await run.on_llm_error(exc)
        raise
    meta: dict[str, Any] = {"model_name": turn.model, "node": request.node}
    final = AIMessage(content=turn.text, id=message_id, response_metadata=meta)
    await run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=final)]]))
    return turn
