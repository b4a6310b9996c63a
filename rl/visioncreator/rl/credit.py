"""Credit where it belongs: which segment owns each token, and advantages per image call and reflect turn.

Per-node credit (:func:`~visioncreator.rl.advantages.per_token_advantages`) credits every reflect
token with the reflection reward of the whole trajectory, so a redo ``<tool_call>`` written in a
reflect turn learns from the reflection, never from the image it makes, and two reflect turns of
one trajectory always share one advantage. The ground truth knows better: every image has its
faults, every verdict is right or wrong. Here:

- **ownership** (:func:`with_segments`): each policy token knows its segment, by the segments'
  character offsets in the turn text and each token's character span (the turn's tokens decoded
  one at a time; see :func:`segment_owners`);
- **image calls**: the tokens of a ``<tool_call>`` segment whose call ran an image tool get
  ``λ·z_image + (1-λ)·A_total``: ``z_image`` is the call's image quality (1 when its image has no
  faults, 0 when it has faults or the call failed; :func:`image_call_qualities`), normalised over
  every scored image call of the group; ``A_total`` is the sample's GRPO advantage of the weighted
  total (what TRL gives every token);
- **reflect turns**: every other token of a turn at the ``reflect`` node gets
  ``λ·z_reflect + (1-λ)·A_total``: ``z_reflect`` is the turn's own score, the fraction of its
  scorable judgements that are correct (:func:`reflect_turn_scores`), normalised over every scored
  reflect turn of the group;
- everything else keeps the per-node or total advantage, and environment tokens get 0.

``λ`` is ``local_weight`` (default 0.5). Normalising is :func:`group_advantages`'s (mean, unbiased
standard deviation, zeros when all are equal), over the calls and turns the samples hold (a cut
sample's dropped turns and a branched group's shared turns are not compared). A call or turn
without a score (a call whose image has no ground truth, a non-image call, a refused call; a
reflect turn without one scorable judgement) keeps the default credit. Credit never reads the
answer: what the answer earns reaches it through the outcome rewards, which score the answer the
policy wrote (:func:`~visioncreator.rl.rewards.outcome.policy_answer`), never the graph's repair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from visioncreator.policy import ToolCall
from visioncreator.rl.advantages import (
    AdvantageError,
    as_weights,
    group_advantages,
    per_token_advantages,
    weighted_total,
)
from visioncreator.rl.rewards.base import truth_of
from visioncreator.rl.samples import SampleError, TokenSample
from visioncreator.tool_servers import IMAGE_TOOLS

if TYPE_CHECKING:  # the graph package pulls in LangGraph; credit only reads the record
    from visioncreator.graph import Trajectory, TurnRecord

__all__ = [
    "Judged",
    "credited_advantages",
    "image_call_qualities",
    "reflect_turn_scores",
    "segment_owners",
    "with_segments",
]

TEXT = "text"
"""Kind of a turn's tokens outside every segment (whitespace between segments, stray text, end of turn)."""
_WINDOW = 8  # tokens of context when decoding one token (enough for any multi-byte character)


class Judged(Protocol):
    """What credit reads of a judgement (:class:`visioncreator.rl.rewards.judgements.Judgement`)."""

    @property
    def turn(self) -> int:
        """Index of the policy turn that gave the verdict."""
        ...

    @property
    def correct(self) -> bool | None:
        """Whether the verdict matched the ground truth; None when it cannot be scored."""
        ...


# ---- ownership -------------------------------------------------------------------------------


def _decoder(tokenizer: Any) -> Callable[[Sequence[int]], str]:
    def decode(ids: Sequence[int]) -> str:
        text = tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(text)

    return decode


def _token_ends(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[int]:
    """Where each token's characters end in ``decode(ids)``.

    Each token is decoded after up to ``_WINDOW`` tokens of context (decoders strip or merge at the
    start of a sequence); a token that ends inside a multi-byte character (the decode ends in
    U+FFFD) ends where the previous token did, and the next one carries the character. Special
    tokens (skipped, as the policy skips them in its text) have no width. If the pieces do not add
    up to the whole decode, every prefix is decoded instead (exact, quadratic).
    """
    ends: list[int] = []
    total = 0
    for i in range(len(ids)):
        lo = max(0, i - _WINDOW)
        before = decode(ids[lo:i]).rstrip("\ufffd")
        after = decode(ids[lo : i + 1]).rstrip("\ufffd")
        total += len(after) - len(before) if after.startswith(before) else 0
        ends.append(total)
    if total == len(decode(ids)):
        return ends
    prefix = [len(decode(ids[: i + 1]).rstrip("\ufffd")) for i in range(len(ids))]
    return [max(prefix[: i + 1]) for i in range(len(prefix))]


def _segment_spans(turn: TurnRecord, decoded: str) -> list[tuple[int, int, str]]:
    """Each segment's character span in ``decoded`` (the turn's tokens decoded), with its label.

    When the text is the decode (or the decode a prefix of it: a sample cut mid-turn) the parser's
    offsets hold. Otherwise (a native tool call the back end rewrote) each segment is looked for in
    order: its exact text, else its opening tag up to the next closing tag; one not found owns nothing.
    """
    exact = turn.text.startswith(decoded)
    spans: list[tuple[int, int, str]] = []
    counts: dict[str, int] = {}
    cursor = 0
    for segment in turn.segments:
        k = counts.get(segment.kind, 0)
        counts[segment.kind] = k + 1
        label = f"t{turn.index}:{segment.kind}:{k}"
        if exact:
            spans.append((segment.start, segment.end, label))
            continue
        piece = turn.text[segment.start : segment.end]
        start = decoded.find(piece, cursor)
        end = start + len(piece)
        if start < 0:
            close = f"</{segment.kind}>"
            start = decoded.find(f"<{segment.kind}>", cursor)
            end = decoded.find(close, start) + len(close) if start >= 0 else -1
            if start < 0 or end < len(close):
                continue
        spans.append((start, end, label))
        cursor = end
    return spans


def _owner(start: int, end: int, spans: Sequence[tuple[int, int, str]], text: str) -> str:
    """The segment that overlaps ``[start, end)`` most (the enclosing one for a token without width)."""
    best, best_overlap = text, 0
    for s, e, label in spans:
        overlap = min(end, e) - max(start, s)
        if overlap > best_overlap or (start == end and s <= start < e and best == text):
            best, best_overlap = label, max(overlap, 0)
    return best


def segment_owners(sample: TokenSample, trajectory: Trajectory, tokenizer: Any) -> tuple[str, ...]:
    """The segment that owns each completion token of ``sample`` (see :attr:`TokenSample.segments`).

    A token belongs to the segment its characters overlap most; a token outside every segment
    (whitespace between segments, stray text, the end-of-turn token) to ``"t{turn}:text"``.

    Args:
        sample: A sample of ``trajectory`` (:func:`~visioncreator.rl.samples.token_sample`, cut or
            not, or :func:`~visioncreator.rl.samples.sft_token_sample`).
        trajectory: Its record: the turns' text and parsed segments with their offsets.
        tokenizer: The tokenizer of the ids (a text tokenizer, not a VLM processor).

    Raises:
        SampleError: A token names a turn the trajectory does not have.

    """
    by_index = {t.index: t for t in trajectory.turns}
    positions: dict[int, list[int]] = {}
    for j, (mask, turn) in enumerate(zip(sample.env_mask, sample.turns, strict=True)):
        if mask:
            positions.setdefault(turn, []).append(j)
    owners = [""] * len(sample.completion_ids)
    decode = _decoder(tokenizer)
    for index, where in positions.items():
        record = by_index.get(index)
        if record is None:
            raise SampleError(f"token {where[0]} belongs to turn {index}, which trajectory has no such turn")
        ids = [sample.completion_ids[j] for j in where]
        ends = _token_ends(ids, decode)
        spans = _segment_spans(record, decode(ids))
        text = f"t{index}:{TEXT}"
        for k, j in enumerate(where):
            owners[j] = _owner(ends[k - 1] if k else 0, ends[k], spans, text)
    return tuple(owners)


def with_segments(sample: TokenSample, trajectory: Trajectory, tokenizer: Any) -> TokenSample:
    """``sample`` with :attr:`~TokenSample.segments` filled by :func:`segment_owners`."""
    return dataclasses.replace(sample, segments=segment_owners(sample, trajectory, tokenizer))


# ---- what each call and turn earned ------------------------------------------------------------


def image_call_qualities(trajectory: Trajectory) -> dict[str, float]:
    """The image quality of each ``<tool_call>`` segment whose call ran an image tool, by segment label.

    The segment is matched to its :class:`~visioncreator.graph.trajectory.ToolCallRecord` by turn
    and call id (the policy's id, else the graph's ``call_{turn}_{k}`` for the turn's ``k``-th call).
    Quality: 0 when the call failed; else 1 when its image's ground truth lists no faults and 0
    when it lists any. Left out: refused calls (no record), calls of other tools, and images
    without ground truth.
    """
    records = {(c.turn, c.id): c for c in trajectory.tool_calls if c.by == "policy"}
    out: dict[str, float] = {}
    for turn in trajectory.turns:
        k = 0  # the graph numbers the turn's parsed calls
        for n, segment in enumerate(s for s in turn.segments if s.kind == "tool_call"):
            if not isinstance(segment.value, ToolCall):
                continue
            record = records.get((turn.index, segment.value.id or f"call_{turn.index}_{k}"))
            k += 1
            if record is None or record.name not in IMAGE_TOOLS:
                continue
            label = f"t{turn.index}:tool_call:{n}"
            if not record.ok:
                out[label] = 0.0
                continue
            truth = truth_of(trajectory.truths, record.handle) if record.handle else None
            if truth is not None:
                out[label] = 0.0 if truth.faults else 1.0
    return out


def reflect_turn_scores(trajectory: Trajectory, judged: Sequence[Judged]) -> dict[int, float]:
    """Each reflect turn's score: the fraction of its scorable judgements (``correct`` not None) that are correct.

    Only turns at the ``reflect`` node with at least one scorable judgement are scored.
    """
    reflect = {t.index for t in trajectory.turns if t.node == "reflect"}
    verdicts: dict[int, list[bool]] = {}
    for j in judged:
        if j.correct is not None and j.turn in reflect:
            verdicts.setdefault(j.turn, []).append(bool(j.correct))
    return {turn: sum(v) / len(v) for turn, v in verdicts.items()}


def _normalised(scores: Sequence[Mapping[Any, float]], *, eps: float, scale_by_std: bool) -> list[dict[Any, float]]:
    """Scores of several samples, normalised together (the whole group's calls, or reflect turns)."""
    keys = [(i, key) for i, per_sample in enumerate(scores) for key in per_sample]
    out: list[dict[Any, float]] = [{} for _ in scores]
    if not keys:
        return out
    values = group_advantages([scores[i][key] for i, key in keys], eps=eps, scale_by_std=scale_by_std).values
    for (i, key), value in zip(keys, values, strict=True):
        out[i][key] = value
    return out


def _judgements(trajectory: Trajectory) -> Sequence[Judged]:
    from visioncreator.rl.rewards.judgements import judgements

    found: Sequence[Judged] = judgements(trajectory)
    return found


def credited_advantages(
    samples: Sequence[TokenSample],
    trajectories: Sequence[Trajectory],
    components: Sequence[Mapping[str, float]],
    weights: Mapping[str, float] | object,
    node_rewards: Mapping[str, Sequence[str]] | None = None,
    *,
    local_weight: float = 0.5,
    judged: Sequence[Sequence[Judged]] | None = None,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> list[list[float]]:
    """One advantage per completion token for each sample of one group, credited by the ground truth.

    See the module docstring for the rules.

    Args:
        samples: The group's samples, with :attr:`~TokenSample.segments` (:func:`with_segments`).
        trajectories: Their trajectories, in the same order.
        components: For each sample, its rewards by name.
        weights: Reward name -> weight of the total (a mapping or a weights dataclass).
        node_rewards: Node -> the rewards that credit its other tokens (see
            :func:`~visioncreator.rl.advantages.per_token_advantages`).
        local_weight: ``λ``, the share of a call's or a reflect turn's own normalised score in
            its advantage; the rest is the sample's total advantage.
        judged: For each trajectory, its judgements; default
            :func:`visioncreator.rl.rewards.judgements.judgements` of each.
        eps: See :func:`~visioncreator.rl.advantages.group_advantages`.
        scale_by_std: See :func:`~visioncreator.rl.advantages.group_advantages`.

    Returns:
        For each sample, one float per completion token; 0.0 on environment tokens.

    Raises:
        AdvantageError: Samples, trajectories, components or judgements differ in number, a sample
            has no segments, ``local_weight`` is outside [0, 1], or a reward or weight is missing.

    """
    if not 0.0 <= local_weight <= 1.0:
        raise AdvantageError(f"local_weight must be in [0, 1], got {local_weight}")
    if len(trajectories) != len(samples) or (judged is not None and len(judged) != len(samples)):
        raise AdvantageError(f"{len(samples)} samples but {len(trajectories)} trajectories or judgement lists")
    missing = [i for i, s in enumerate(samples) if s.segments is None]
    if missing:
        raise AdvantageError(f"sample {missing[0]} has no segments: fill them with with_segments()")
    base = per_token_advantages(samples, components, weights, node_rewards, eps=eps, scale_by_std=scale_by_std)
    w = as_weights(weights)
    totals = group_advantages([weighted_total(c, w) for c in components], eps=eps, scale_by_std=scale_by_std).values
    judged = judged if judged is not None else [_judgements(t) for t in trajectories]
    # Only what the samples hold is compared: not the turns a cut dropped, nor a branched group's shared past.
    owned = [set(s.segments or ()) for s in samples]
    held = [set(s.turns) for s in samples]
    qualities = [
        {k: v for k, v in image_call_qualities(t).items() if k in owned[i]} for i, t in enumerate(trajectories)
    ]
    scores = [
        {k: v for k, v in reflect_turn_scores(t, judged[i]).items() if k in held[i]} for i, t in enumerate(trajectories)
    ]
    calls = _normalised(qualities, eps=eps, scale_by_std=scale_by_std)
    turns = _normalised(scores, eps=eps, scale_by_std=scale_by_std)
    out: list[list[float]] = []
    for i, sample in enumerate(samples):
        row = list(base[i])
        for j, (mask, turn, owner) in enumerate(zip(sample.env_mask, sample.turns, sample.segments or (), strict=True)):
            local = calls[i].get(owner, turns[i].get(turn)) if mask else None
            if local is not None:
                row[j] = local_weight * local + (1.0 - local_weight) * totals[i]
        out.append(row)
    return out
