"""Token samples: one trajectory as prompt ids, completion ids and a mask of the policy's own tokens.

A multi-turn trajectory trains as one sequence. The prompt is what the first policy turn saw; the
completion is everything after it: each turn's generated tokens (mask 1) and, between turns, the
tokens the policy did not write (mask 0): tool observations, error feedback, node instructions,
chat-template markers, and the end-of-turn token a completion that stopped at its token limit
never produced. Losses see only mask-1 tokens.

Two sources:

- :func:`token_sample` reads the recorded token ids of a policy that gives them (the transformers
  and vLLM back ends). It relies on their chaining: turn k+1's prompt ids begin with turn k's
  prompt ids and completion ids (see :mod:`visioncreator.policy.local`), so nothing is
  re-tokenized and the sample is exactly what the policy saw and wrote.
- :func:`sft_token_sample` renders a trajectory without ids (the scripted expert's) with a
  tokenizer's chat template, the same rendering the transformers policy uses, and marks the
  assistant turns' content and end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from visioncreator.graph import Trajectory, TurnRecord
from visioncreator.policy import END_OF_TURN, chat_messages, first_divergence
from visioncreator.rl.errors import RLError

__all__ = ["SampleError", "Span", "TokenSample", "sft_token_sample", "token_sample"]


class SampleError(RLError, ValueError):
    """A trajectory cannot become a token sample (missing ids, a broken prompt chain, bad lengths)."""


class Span(NamedTuple):
    """A run of completion tokens with one owner."""

    start: int
    """Index of the first token in ``completion_ids``."""
    end: int
    """Index just past the last token."""
    policy: bool
    """True for the policy's own tokens (mask 1)."""
    turn: int
    """Policy turn index; -1 for environment tokens."""
    node: str
    """Node of that turn; ``""`` for environment tokens."""


@dataclass(frozen=True)
class TokenSample:
    """One trajectory as a single training sequence.

    Every per-token field is aligned to ``completion_ids``.
    """

    prompt_ids: tuple[int, ...]
    """What the first policy turn saw."""
    completion_ids: tuple[int, ...]
    """Everything after it: policy turns and the environment tokens between them."""
    env_mask: tuple[int, ...]
    """1 on tokens the policy produced, 0 on tool observations, feedback and template tokens."""
    logprobs: tuple[float, ...] | None
    """The sampling log-probability of each policy token, 0.0 on environment tokens; ``None``
    when the policy did not record them (or for SFT samples)."""
    nodes: tuple[str, ...]
    """The node of the turn that produced each token; ``""`` on environment tokens."""
    turns: tuple[int, ...]
    """The policy turn index of each token; -1 on environment tokens."""
    segments: tuple[str, ...] | None = None
    """The segment that owns each token, ``"t{turn}:{kind}:{k}"`` (the ``k``-th segment of that
    kind in the turn, e.g. ``"t3:tool_call:1"``), ``"t{turn}:text"`` for the turn's tokens outside
    every segment, ``""`` on environment tokens; ``None`` until
    :func:`visioncreator.rl.credit.with_segments` fills it (it needs the tokenizer)."""

    def __post_init__(self) -> None:
        """Check that every per-token field has one entry per completion token."""
        n = len(self.completion_ids)
        fields: dict[str, Sequence[Any] | None] = {
            "env_mask": self.env_mask,
            "logprobs": self.logprobs,
            "nodes": self.nodes,
            "turns": self.turns,
            "segments": self.segments,
        }
        for name, values in fields.items():
            if values is not None and len(values) != n:
                raise SampleError(f"{name} has {len(values)} entries for {n} completion tokens")
        if any(m not in (0, 1) for m in self.env_mask):
            raise SampleError("env_mask may hold only 0 and 1")

    @property
    def input_ids(self) -> tuple[int, ...]:
        """Prompt and completion ids, the whole sequence."""
        return self.prompt_ids + self.completion_ids

    def head(self, n: int) -> TokenSample:
        """The same sample with only the first ``n`` completion tokens (and their masks, logprobs, owners, segments)."""
        if len(self.completion_ids) <= n:
            return self
        return TokenSample(
            prompt_ids=self.prompt_ids,
            completion_ids=self.completion_ids[:n],
            env_mask=self.env_mask[:n],
            logprobs=None if self.logprobs is None else self.logprobs[:n],
            nodes=self.nodes[:n],
            turns=self.turns[:n],
            segments=None if self.segments is None else self.segments[:n],
        )

    @property
    def policy_tokens(self) -> int:
        """How many completion tokens carry loss."""
        return sum(self.env_mask)

    def spans(self) -> list[Span]:
        """The completion split into maximal runs of one owner (a policy turn, or the environment)."""
        out: list[Span] = []
        start = 0
        for i in range(1, len(self.completion_ids) + 1):
            if i == len(self.completion_ids) or (self.env_mask[i], self.turns[i]) != (
                self.env_mask[start],
                self.turns[start],
            ):
                out.append(Span(start, i, self.env_mask[start] == 1, self.turns[start], self.nodes[start]))
                start = i
        return out


class _Builder:
    """Accumulates completion tokens with their per-token fields."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float] = []
        self.nodes: list[str] = []
        self.turns: list[int] = []

    def env(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))
        self.nodes.extend([""] * len(ids))
        self.turns.extend([-1] * len(ids))

    def policy(self, ids: Sequence[int], logprobs: Sequence[float] | None, node: str, turn: int) -> None:
        self.ids.extend(ids)
        self.mask.extend([1] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.nodes.extend([node] * len(ids))
        self.turns.extend([turn] * len(ids))

    def build(self, prompt: Sequence[int], *, with_logprobs: bool) -> TokenSample:
        return TokenSample(
            prompt_ids=tuple(prompt),
            completion_ids=tuple(self.ids),
            env_mask=tuple(self.mask),
            logprobs=tuple(self.logprobs) if with_logprobs else None,
            nodes=tuple(self.nodes),
            turns=tuple(self.turns),
        )


def _turn_ids(turn: TurnRecord) -> tuple[int, list[int], list[int], list[float] | None, str]:
    index, node = turn.index, turn.node
    prompt, completion = turn.prompt_token_ids, turn.completion_token_ids
    if prompt is None or completion is None:
        missing = "prompt_token_ids" if prompt is None else "completion_token_ids"
        raise SampleError(f"turn {index} ({node or 'no node'}) has no {missing}: the policy did not record token ids")
    if not prompt:
        raise SampleError(f"turn {index} ({node or 'no node'}) has an empty prompt")
    logprobs = turn.logprobs
    if logprobs is not None and len(logprobs) != len(completion):
        raise SampleError(
            f"turn {index} ({node or 'no node'}) has {len(logprobs)} logprobs for {len(completion)} completion tokens"
        )
    return index, list(prompt), list(completion), None if logprobs is None else [float(x) for x in logprobs], node


def token_sample(trajectory: Trajectory) -> TokenSample:
    """The recorded token ids of a trajectory as one masked sequence.

    Args:
        trajectory: A finished trajectory whose turns carry ``prompt_token_ids`` and
            ``completion_token_ids`` (any :class:`~visioncreator.graph.trajectory.Trajectory`,
            subclasses included).

    Returns:
        The sample. ``logprobs`` is ``None`` unless every turn recorded them.

    Raises:
        SampleError: There are no turns; a turn lacks its ids; a turn's logprobs do not match its
            completion; or a turn's prompt does not begin with the previous turn's prompt and
            completion (the message names the turn and the first differing position).

    """
    if not trajectory.turns:
        raise SampleError(f"trajectory {trajectory.thread_id!r} has no policy turns")
    builder = _Builder()
    prompt: list[int] = []
    with_logprobs = True
    for position, turn in enumerate(trajectory.turns):
        index, turn_prompt, completion, logprobs, node = _turn_ids(turn)
        if position == 0:
            prompt = turn_prompt
        else:
            so_far = prompt + builder.ids
            found = first_divergence(so_far, turn_prompt)
            if found is not None:
                raise SampleError(
                    f"turn {index} ({node}) prompt does not extend the previous turns' prompt and completion: "
                    f"they differ at token {found.position} (expected {list(found.expected)}, "
                    f"found {list(found.found)})"
                )
            builder.env(turn_prompt[len(so_far) :])
        with_logprobs = with_logprobs and logprobs is not None
        builder.policy(completion, logprobs, node, index)
    return builder.build(prompt, with_logprobs=with_logprobs)


def _text(tokenizer: Any, chat: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *, gen: bool) -> str:
    return str(tokenizer.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=gen))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def sft_token_sample(
    trajectory: Trajectory,
    tokenizer: Any,
    max_length: int | None = None,
    *,
    tools: list[dict[str, Any]] | None = None,
    instructions: bool = True,
) -> TokenSample:
    """A trajectory without token ids (the expert's) rendered and tokenized for supervised training.

    The recorded conversation, up to its last assistant message, goes through
    :func:`~visioncreator.policy.chat_template.chat_messages` and the tokenizer's chat template,
    as :class:`~visioncreator.policy.local.TransformersPolicy` renders its prompts. The text is
    tokenized piece by piece (environment text, each assistant turn's content, its end-of-turn
    token), so that no token straddles a policy/environment boundary and each assistant turn
    starts on a token boundary, as it does when the model generates it after the generation prompt.

    Args:
        trajectory: A finished trajectory with at least one assistant message.
        tokenizer: A Hugging Face tokenizer with a prefix-preserving chat template.
        max_length: Cut the whole sequence (prompt + completion) to this many tokens.
        tools: The template's ``tools`` (as ``TransformersPolicy`` with ``render_tools``); default none.
        instructions: Keep the node instructions (``LocalPolicySettings.node_instructions``).

    Returns:
        The sample: mask 1 exactly on each assistant turn's content and its end-of-turn token;
        ``logprobs`` is ``None``.

    Raises:
        SampleError: No assistant message; the template is not prefix-preserving at a turn; or the
            prompt alone is longer than ``max_length``.

    """
    messages = trajectory.messages
    last = max((j for j, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is None:
        raise SampleError(f"trajectory {trajectory.thread_id!r} has no assistant message")
    chat = chat_messages(messages[: last + 1], None, instructions=instructions)
    nodes = [m.node or "" for m in messages[: last + 1] if m.role == "assistant"]
    full = _text(tokenizer, chat, tools, gen=False)
    eot = END_OF_TURN if END_OF_TURN in full else str(tokenizer.eos_token or "")
    builder = _Builder()
    prompt: list[int] | None = None
    cursor = 0  # characters of ``full`` already tokenized
    turn = 0
    for j, entry in enumerate(chat):
        if entry["role"] != "assistant":
            continue
        head = _text(tokenizer, chat[:j], tools, gen=True)
        content = str(entry["content"] or "")
        if not full.startswith(head + content):
            raise SampleError(
                f"turn {turn}: the chat template does not render the conversation before it as a prefix "
                "(it is not prefix-preserving)"
            )
        env_ids = _encode(tokenizer, full[cursor : len(head)])
        if prompt is None:
            prompt = env_ids
        else:
            builder.env(env_ids)
        end = len(head) + len(content)
        own = content + eot if eot and full.startswith(eot, end) else content
        builder.policy(_encode(tokenizer, own), None, nodes[turn], turn)
        cursor = len(head) + len(own)
        turn += 1
    builder.env(_encode(tokenizer, full[cursor:]))
    sample = builder.build(prompt or [], with_logprobs=False)
    if max_length is not None:
        sample = _truncate(sample, max_length)
    return sample


def _truncate(sample: TokenSample, max_length: int) -> TokenSample:
    if max_length < 1:
        raise SampleError(f"max_length must be at least 1, got {max_length}")
    keep = max_length - len(sample.prompt_ids)
    if keep < 1:
        raise SampleError(f"the prompt has {len(sample.prompt_ids)} tokens, over max_length={max_length}")
    return sample.head(keep)
