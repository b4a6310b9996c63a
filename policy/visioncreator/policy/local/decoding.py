"""One left-padded ``generate`` over many rows, each row recorded as if it had run alone.

The local policy (:class:`~visioncreator.policy.local.TransformersPolicy`) merges concurrent turns
into one call of the model's ``generate``. What keeps each row's record its own:

- **prompts** are left-padded with an attention mask (transformers derives the positions from
  it), so a row's logits are its unbatched logits up to float rounding (about 1e-6 here);
- **a row reads only what no cache covers**: a :class:`PrefixCache` keeps each conversation's
  attention cache (its last prompt and completion) between calls, so a row's next turn reads only
  its new ids; the leading ids every row of a batch shares (the system prompt and tool list, for
  new conversations) are run through the model once, at batch size 1. Each row is laid out as
  ``[its covered ids][padding][its own rest]``, the mask zero over the padding and the positions
  counted from the mask, so a row attends to exactly its own prompt. Batched prefill is
  compute-bound (8 rows cost 8 times one); this leaves only the rows' new tokens to it. The caches
  are dropped when the model's weights change (a training step);
- **sampling** is done per row by the last logits processor, from the row's own
  ``torch.Generator`` seeded with the row's seed: a row draws the same tokens whatever rows it
  shares the batch with (the global RNG would hand out draws by batch position). The processor
  applies temperature, top-k and top-p itself (transformers' own warpers, in their order), picks
  the token, records its log-probability, and hands ``generate`` a one-hot score, so
  ``generate`` runs greedy and takes exactly that token;
- **stops** are per row: a stopping criterion that returns one bool per row ends a row at its
  end-of-turn token, at its own ``max_new_tokens`` or when its caller is gone; ``generate`` pads
  rows that ended and goes on with the others. A row's record is cut where it ended.

Recording one log-probability per row and step, not ``output_scores``, also spares holding the
full ``(rows, steps, vocabulary)`` scores. Needs the ``transformers`` extra.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from visioncreator.policy.local.prefix_cache import PrefixCache, growing_cache

__all__ = ["PrefixCache", "Row", "Sampling", "generate_rows", "row_seed", "shared_prefix"]


@dataclass(frozen=True, eq=False)
class Row:
    """One sequence to generate."""

    prompt: Sequence[int]
    """Its prompt ids, unpadded."""
    seed: int | None
    """Seed of its own sampler; None draws from torch's global RNG."""
    max_new_tokens: int
    """Most tokens this row may generate."""
    stop: threading.Event
    """Set when nobody waits for this row any more: it ends at its next token."""


@dataclass(frozen=True)
class Sampling:
    """How every row of a batch samples (a policy's settings)."""

    temperature: float
    """0 is greedy."""
    top_p: float
    top_k: int
    """0 is off."""
    logprobs: Literal["processed", "raw"]
    """Which log-probability is recorded (see ``LocalPolicySettings.logprobs``)."""
    eos: frozenset[int]
    """Tokens that end a row (kept as its last token)."""
    pad: int
    """What a row is padded with, on the left of its prompt and after its end."""
    max_time_s: float | None = None
    """Wall-time bound of the whole ``generate`` call."""


def row_seed(seed: int | None, index: int) -> int | None:
    """The seed of row ``index`` of ``n`` samples drawn for one turn seeded ``seed``.

    Row 0 keeps the turn's seed (so it is the turn ``respond`` would give); the others get seeds
    derived from it, independent of each other.
    """
    if seed is None or index == 0:
        return seed
    digest = hashlib.sha256(f"{seed}|row|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def generate_rows(
    model: Any, rows: Sequence[Row], sampling: Sampling, streamer: Any = None, prefix: PrefixCache | None = None
) -> list[tuple[list[int], list[float]]]:
    """Generate every row in one left-padded ``generate`` call.

    Args:
        model: A ``transformers`` causal LM (not changed: no training step, no mode switch).
        rows: The rows, at least one.
        sampling: Their shared sampling settings.
        streamer: A ``generate`` streamer (one row only).
        prefix: Where conversations' attention caches are kept between calls; None keeps
            nothing (a batch still reads the prefix its rows share once; one row reads it all).

    Returns:
        Per row, in order: its completion ids (through its end-of-turn token, no padding) and one
        log-probability per completion id.

    Raises:
        ValueError: No rows, or a streamer with more than one row.

    """
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    if not rows:
        raise ValueError("generate_rows needs at least one row")
    if streamer is not None and len(rows) > 1:
        raise ValueError("a streamer follows one row only")
    device = model.device
    prompts = [list(r.prompt) for r in rows]
    shared = shared_prefix(prompts) if len(rows) > 1 else 0
    store = prefix if prefix is not None else PrefixCache(max_bytes=0)
    with torch.inference_mode():
        cache, covered = (None, [0] * len(rows))
        if prefix is not None or shared:
            cache, covered = store.batch(model, prompts, shared, room=max(r.max_new_tokens for r in rows))
        cache = cache if cache is not None else growing_cache(model)
    input_ids, attention, width = _layout(prompts, covered, sampling.pad)
    pick = _picker(rows, sampling, device)
    ends = _ends(rows, width, sampling.eos)
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        do_sample=False,  # the picker samples; generate takes its one-hot choice
        max_new_tokens=max(r.max_new_tokens for r in rows),
        max_time=sampling.max_time_s,
        eos_token_id=sorted(sampling.eos),
        pad_token_id=sampling.pad,
        return_dict_in_generate=True,
    )
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            **({"cache": cache} if cache is not None else {}),
            generation_config=config,
            logits_processor=[pick],
            stopping_criteria=StoppingCriteriaList([ends]),
            streamer=streamer,
        )
    if not pick.steps:
        return [([], []) for _ in rows]
    new = out.sequences[:, width:].tolist()
    chosen = torch.stack(pick.steps, dim=1).tolist()  # (rows, steps)
    result = []
    for i in range(len(rows)):
        end = ends.at[i] if ends.at[i] is not None else min(len(new[i]), len(chosen[i]))
        result.append((new[i][:end], chosen[i][:end]))
    if prefix is not None:
        _keep(prefix, model, out.cache, prompts, covered, width, [ids for ids, _ in result])
    return result


def _layout(prompts: list[list[int]], covered: list[int], pad: int) -> tuple[Any, Any, int]:
    """Input ids and attention mask: row ``i`` is ``[its covered ids][padding][the rest of its prompt]``.

    The covered ids line up with the cache (positions ``0..covered[i]``, zero-padded to the widest);
    the rest is left-padded to the longest rest. Returns the ids, the mask and their width.
    """
    import torch

    front = max(covered)
    width = front + max(len(p) - c for p, c in zip(prompts, covered, strict=True))
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, (prompt, c) in enumerate(zip(prompts, covered, strict=True)):
        input_ids[i, :c] = torch.tensor(prompt[:c], dtype=torch.long)
        attention[i, :c] = 1
        rest = prompt[c:]
        input_ids[i, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
        attention[i, width - len(rest) :] = 1
    return input_ids, attention, width


def _keep(
    prefix: PrefixCache,
    model: Any,
    cache: Any,
    prompts: list[list[int]],
    covered: list[int],
    width: int,
    completions: list[list[int]],
) -> None:
    """Keep each row's conversation so far (its prompt and the completion ids the model has read) for its next turn."""
    import torch

    if cache is None:
        return
    read = cache.get_seq_length() - width  # generated ids fed back (all but the last step's)
    ids, positions = [], []
    for prompt, c, completion in zip(prompts, covered, completions, strict=True):
        k = max(0, min(len(completion), read))
        ids.append([*prompt, *completion[:k]])
        positions.append(
            torch.cat(
                [torch.arange(c), torch.arange(width - (len(prompt) - c), width), torch.arange(width, width + k)]
            ).to(model.device)
        )
    prefix.keep(model, cache, ids, positions)


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading ids every prompt shares, leaving each prompt at least one id of its own.

    The model must read at least one id per row after the cached prefix (the last prompt
    position's logits give the first token), hence the cap at the shortest prompt minus one.
    """
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def _picker(rows: Sequence[Row], sampling: Sampling, device: Any) -> Any:
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    greedy = sampling.temperature == 0
    warpers: list[Any] = []
    if not greedy:
        if sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
    generators = [
        None if greedy or r.seed is None else torch.Generator(device=device).manual_seed(r.seed) for r in rows
    ]

    class _Pick(LogitsProcessor):
        """Warp, pick each row's token from its own generator, record its log-probability."""

        def __init__(self) -> None:
            self.steps: list[torch.Tensor] = []

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            warped = scores
            for warper in warpers:
                warped = warper(input_ids, warped)
            logp = torch.log_softmax(warped, dim=-1)
            chosen = warped.argmax(dim=-1) if greedy else _race(logp.exp(), generators)
            recorded = logp if sampling.logprobs == "processed" else torch.log_softmax(scores, dim=-1)
            self.steps.append(recorded.gather(-1, chosen[:, None]).squeeze(-1))
            one_hot = torch.full_like(scores, float("-inf"))
            one_hot.scatter_(-1, chosen[:, None], 0.0)
            return one_hot  # type: ignore[return-value]

    return _Pick()


def _race(probs: Any, generators: Sequence[Any]) -> Any:
    """One token per row from its own generator (its seed): the exponential race, ``argmax p_i / E_i``.

    ``E_i = -log U_i`` with the row's uniforms: the same law as ``multinomial``, a third of its
    cost here (8 rows over SmolLM2's 49,152 ids: 2.3 ms a step against 7.1), and as stable under
    float rounding (a choice flips only where two tokens' ratios tie, unlike an inverse CDF, whose
    boundaries in the long tail of tiny probabilities move with any rounding of the running sum).
    """
    import torch

    u = torch.stack([torch.rand(probs.shape[-1], generator=g, device=probs.device) for g in generators])
    return (probs / u.log_().neg_()).argmax(dim=-1)


def _ends(rows: Sequence[Row], width: int, eos: frozenset[int]) -> Any:
    import torch
    from transformers import StoppingCriteria

    class _Ends(StoppingCriteria):
        """Per row: done at its end-of-turn token, its own token budget, or its caller gone."""

        def __init__(self) -> None:
            self.at: list[int | None] = [None] * len(rows)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            step = input_ids.shape[1] - width
            last = input_ids[:, -1].tolist()
            for i, row in enumerate(rows):
                if self.at[i] is None and (last[i] in eos or step >= row.max_new_tokens or row.stop.is_set()):
                    self.at[i] = step
            done = [at is not None for at in self.at]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return _Ends()
