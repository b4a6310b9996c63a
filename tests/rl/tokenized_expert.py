"""A scripted policy with token ids: the expert's text, tokenized as a local model would record it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visioncreator.graph.offline import expert_policy
from visioncreator.policy import END_OF_TURN, ExpertConfig, Message, PolicyRequest, PolicyTurn, chat_messages


class TokenizedExpert:
    """The scripted expert, with the token ids a local model writing its text would record.

    Each turn's completion is its text's tokens and the end-of-turn token; each prompt is the
    previous turn's prompt and completion, then the tokens of what the conversation added (as
    :class:`~visioncreator.policy.local.TransformersPolicy` stitches): the chaining
    :func:`~visioncreator.rl.samples.token_sample` reads.
    """

    name = "expert"

    def __init__(self, config: ExpertConfig, tokenizer: Any) -> None:
        self.expert = expert_policy(config)
        self.tok = tokenizer
        self.written: dict[str, list[int]] = {}  # prompt text + completion text -> their ids

    def _render(self, messages: Sequence[Message], node: Any) -> str:
        return str(
            self.tok.apply_chat_template(chat_messages(messages, node), tokenize=False, add_generation_prompt=True)
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _prompt(self, request: PolicyRequest) -> tuple[str, list[int]]:
        text = self._render(request.messages, request.node)
        for j in range(len(request.messages) - 1, -1, -1):
            m = request.messages[j]
            head = self._render(request.messages[:j], m.node) + m.content if m.role == "assistant" else ""
            if head in self.written and text.startswith(head + END_OF_TURN):
                return text, self.written[head] + self._encode(text[len(head) + len(END_OF_TURN) :])
        return text, self._encode(text)

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        turn = await self.expert.respond(request)
        text, prompt = self._prompt(request)
        completion = [*self._encode(turn.text), self.tok.convert_tokens_to_ids(END_OF_TURN)]
        self.written[text + turn.text] = prompt + completion
        return turn.model_copy(update={"prompt_token_ids": tuple(prompt), "completion_token_ids": tuple(completion)})
