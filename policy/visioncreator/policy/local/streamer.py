"""Token streaming for the local policy: a ``generate`` streamer, and its relay from the model's thread to the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from visioncreator.policy.types import TextSink

__all__ = ["TextPieces", "relay"]

T = TypeVar("T")
Push = Callable[[str], None]


class TextPieces:
    """A ``transformers`` streamer (``generate(streamer=...)``) that hands on the completion's text piece by piece.

    Each new token re-decodes the completion so far as the turn's text is decoded (special
    tokens skipped, no clean-up), and the part past what was already handed on goes to ``push``.
    A character whose UTF-8 bytes are split over tokens decodes to U+FFFD until its last byte
    comes: a trailing U+FFFD is held back, so a piece is never taken back. Batch size 1 only
    (the first ``put`` is the prompt, skipped).

    Args:
        tokenizer: The policy's tokenizer.
        push: Called, on the model's thread, with each new piece.

    """

    def __init__(self, tokenizer: Any, push: Push) -> None:
        self._tok = tokenizer
        self._push = push
        self._ids: list[int] = []
        self._text = ""
        self._prompt = True

    def put(self, value: Any) -> None:
        """Take the next token(s) (a tensor); the first call's are the prompt's."""
        if self._prompt:
            self._prompt = False
            return
        self._ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = str(self._tok.decode(self._ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        stable = text.rstrip("\ufffd")
        if len(stable) > len(self._text) and stable.startswith(self._text):
            piece, self._text = stable[len(self._text) :], stable
            self._push(piece)

    def end(self) -> None:
        """Generation ended; the caller sends what is left from the recorded text."""


async def relay(work: Callable[[Push], T], on_text: TextSink) -> tuple[T, str]:
    """Run ``work(push)`` in a worker thread, awaiting ``on_text`` here with each piece it pushes.

    Returns:
        What ``work`` returned, and the text sent to ``on_text``.

    Raises:
        Whatever ``work`` raised (after the pieces it pushed before).

    """
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def push(piece: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

    def run() -> T:
        try:
            return work(push)
        finally:
            push(None)

    job = asyncio.ensure_future(anyio.to_thread.run_sync(run, abandon_on_cancel=True))
    sent: list[str] = []
    try:
        while (piece := await pieces.get()) is not None:
            sent.append(piece)
            await on_text(piece)
        return await job, "".join(sent)
    finally:
        job.cancel()  # a no-op once it is done
