"""One left-padded ``generate`` over many rows, each row recorded as if it had run alone.

The local policy (:class:`~visioncreator.policy.local.TransformersPolicy`) merges concurrent turns
into one call of the model's ``generate``. What keeps each row's record its own:

- **prompts** are left-padded with an attention mask (transformers derives the positions from
  it), so a row's logits are its unbatched logits up to float rounding (about 1e-6 here);
- **a shared prefix is read once**: the leading ids every row's prompt shares (the system prompt
  and tool list, identical for every turn of every trajectory) are run through the model once, at
  batch size 1, and their attention cache is repeated over the rows; each row is laid out as
  ``[shared prefix][left padding][its own rest]``, the mask zero over the padding and the
  positions counted from the mask, so a row attends to exactly its own prompt. Batched prefill
  is compute-bound (8 rows cost 8 times one); this leaves only the rows' own tokens to it. A
  :class:`PrefixCache` keeps the last prefix's cache for the next call (a lone row's prefix is
  its whole prompt but its last id: the next turn of its conversation starts with it), reused as
  far as the ids match, and dropped when the model's weights change (a training step);
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
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PrefixCache", "Row", "Sampling", "generate_rows", "row_seed", "shared_prefix"]

_untracked = itertools.count(1)


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
        prefix: Where the shared prefix's attention cache is kept between calls; None computes
            it for this call only (and not at all for one row).

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
    shared = shared_prefix([r.prompt for r in rows]) if len(rows) > 1 or prefix is not None else 0
    width = shared + max(len(r.prompt) - shared for r in rows)
    input_ids = torch.full((len(rows), width), sampling.pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        prompt = list(row.prompt)
        input_ids[i, :shared] = torch.tensor(prompt[:shared], dtype=torch.long)
        attention[i, :shared] = 1
        if len(prompt) > shared:
            input_ids[i, width - len(prompt) + shared :] = torch.tensor(prompt[shared:], dtype=torch.long)
            attention[i, width - len(prompt) + shared :] = 1
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
        cache = (prefix or PrefixCache()).cache(model, list(rows[0].prompt[:shared]), len(rows)) if shared else None
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
    return result


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


class PrefixCache:
    """The attention cache of the last prefix :func:`generate_rows` computed, for the next calls.

    One entry: the prefix's ids and their cache at batch size 1. A call reuses it as far as its
    own prefix starts with the same ids, computes the rest, and keeps its own prefix as the new
    entry. The entry is dropped when the model changes: another model object, or any parameter
    changed in place (an optimizer step, a loaded state dict: torch's per-tensor version
    counters), so a cache is never read against other weights than those that made it.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._cache: Any = None
        self._model: tuple[int, int] | None = None
        self.reused = 0
        """Prefix ids taken from the entry so far (for tests and benchmarks)."""

    def cache(self, model: Any, ids: list[int], rows: int) -> Any:
        """A fresh cache of ``ids`` (not empty) repeated over ``rows``, for ``generate`` to extend."""
        import copy

        import torch
        from transformers import DynamicCache

        which = (id(model), _weights_version(model))
        if which != self._model:
            self._ids, self._cache, self._model = [], None, which
        same = 0
        for a, b in zip(self._ids, ids, strict=False):
            if a != b:
                break
            same += 1
        if same:
            cache = copy.deepcopy(self._cache)
            cache.crop(same - len(self._ids))  # transformers 5: a negative count of ids to drop
            self.reused += same
        else:
            cache = DynamicCache(config=model.config)
        if len(ids) > same:
            model(input_ids=torch.tensor([ids[same:]], device=model.device), cache=cache, use_cache=True)
        self._ids, self._cache = ids, copy.deepcopy(cache)
        cache.batch_repeat_interleave(rows)
        return cache


def _weights_version(model: Any) -> int:
    """Sum of the parameters' in-place version counters: it grows whenever a weight is changed in place.

    Parameters made under ``torch.inference_mode`` have no counter: then a new value every call,
    so nothing is reused.
    """
    try:
        return sum(int(p._version) for p in model.parameters())
    except RuntimeError:
        return -next(_untracked)


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
            if greedy:
                chosen = warped.argmax(dim=-1)
            else:
                probs = logp.exp()
                chosen = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
            recorded = logp if sampling.logprobs == "processed" else torch.log_softmax(scores, dim=-1)
            self.steps.append(recorded.gather(-1, chosen[:, None]).squeeze(-1))
            one_hot = torch.full_like(scores, float("-inf"))
            one_hot.scatter_(-1, chosen[:, None], 0.0)
            return one_hot  # type: ignore[return-value]

    return _Pick()


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
