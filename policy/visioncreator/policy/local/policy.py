r"""The ``transformers`` policy: a local Hugging Face causal LM, in-process, on CPU or GPU.

Same interface and same recorded fields as the HTTP back end
(:class:`~visioncreator.policy.openai.OpenAIPolicy`): ``respond(request)`` and
``sample(request, n)`` return :class:`~visioncreator.policy.types.PolicyTurn` values with the
exact prompt and completion token ids and one log-probability per completion token.

How a prompt is built. The conversation goes through the model's chat template (for our tiny
models and SmolLM2, :mod:`visioncreator.policy.chat_template`: ChatML with tool calling), with
``request.tools`` as the template's ``tools`` when ``render_tools`` is on, and each node's
one-line instruction kept in the history (:func:`~visioncreator.policy.chat_template.chat_messages`). The template is
prefix-preserving as text: ``render(m[:k], generation prompt) + completion text + "<|im_end|>"``
is a prefix of ``render(m[:k+1])``.

Token-exact multi-turn prompts (what RL needs: turn k+1's prompt ids begin with turn k's prompt
ids and completion ids). Text prefix preservation is not enough, because re-tokenizing text is
not the inverse of generating tokens:

1. a sampled token sequence is often not the tokenizer's canonical split of its own text (the
   model may write ``"a" "b"`` where BPE merges ``"ab"``), and at the boundary between the
   generation prompt's ``"\n"`` and the completion, BPE can merge across what were two turns;
2. a completion that stopped at ``max_new_tokens`` has no ``<|im_end|>``; the template closes
   the message with one, which the model never generated;
3. special tokens the model generated are dropped from the text (``skip_special_tokens``), so
   a re-render cannot reproduce them.

So, with ``stitch=True`` (default), the policy remembers the ids of the turns it generated
(keyed by the prompt text plus the completion text, ``stitch_cache_size`` entries) and, when a
later request's rendering starts with such a turn, builds the prompt as *remembered prompt ids +
remembered completion ids + the tokens of the rest of the rendering*. The rest begins at the
template's ``<|im_end|>`` after the assistant content; it is dropped when the completion already
ends with that very token. Hence the only tokens between turn k's completion and the new text of
turn k+1 are the end-of-turn token(s) appended after a completion that stopped at max tokens (or
at another stop token), and the record is exact: turn k+1's prompt ids begin with turn k's prompt
ids + completion ids, always. Those appended tokens, like tool observations, are environment tokens
(mask 0 in training). A conversation this policy did not generate (replayed, scripted, edited) is
simply rendered and tokenized. With ``stitch=False`` every prompt is the plain tokenization of the
rendering; ``first_divergence`` (in the chat-template module) shows where that breaks the chain.

Log-probabilities: ``logprobs="processed"`` (default) records the log-softmax of the logits
after the sampling processors (temperature, top-p, top-k): the distribution the token was
actually drawn from, what TRL's GRPO computes (logits / temperature). ``"raw"`` records the
log-softmax of the model's logits (vLLM's default ``raw_logprobs``).

Batching. Each turn runs in a worker thread; concurrent turns (graph runs in flight, the ``n``
samples of :meth:`~TransformersPolicy.sample`) are merged, up to ``batch_size`` sequences, into one
left-padded ``generate`` (:mod:`~visioncreator.policy.local.batcher` gathers them with a
``batch_wait_s`` wait; :mod:`~visioncreator.policy.local.decoding` runs them). Each row keeps its
own record: its unpadded prompt ids, its completion ids up to its own end, its log-probabilities,
its own sampler seeded from its turn (a turn draws the same tokens whatever it is batched with),
and under greedy decoding exactly the ids an unbatched run gives (log-probabilities within float
rounding). Each conversation's attention cache is kept for its next turn, which then reads only its
new ids, and the prompt prefix new conversations share (the system prompt) is read once, until the
weights change (``prefix_cache``, ``prefix_cache_mb``). One ``generate`` runs at a time; a
cancelled call ends its row at the next token (or leaves the queue). An error fails only the
turn that causes it. ``respond_streaming`` hands the text on as it is generated (a ``generate``
streamer, :mod:`~visioncreator.policy.local.streamer`; a streamed turn runs alone). Needs the ``transformers`` extra.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import anyio.to_thread

from visioncreator.policy.chat_template import chat_messages, tool_dicts
from visioncreator.policy.errors import PolicyContextError
from visioncreator.policy.format import parse_turn
from visioncreator.policy.local.batcher import RowBatcher
from visioncreator.policy.local.decoding import PrefixCache, Row, Sampling, generate_rows, row_seed
from visioncreator.policy.local.settings import LocalPolicySettings
from visioncreator.policy.local.shadow import Shadow, needs_shadow
from visioncreator.policy.local.streamer import Push, TextPieces, relay
from visioncreator.policy.openai.messages import ImageSource
from visioncreator.policy.openai.policy import turn_seed
from visioncreator.policy.types import FormatError, Message, Node, ParsedTurn, PolicyRequest, PolicyTurn, TextSink

__all__ = ["TransformersPolicy"]


class _Prompt:
    __slots__ = ("ids", "text")

    def __init__(self, text: str, ids: list[int]) -> None:
        self.text = text
        self.ids = ids


class _Job:
    """One turn's rows (``n`` samples of one prompt), and where its text streams to (a job of its own then)."""

    __slots__ = ("push", "rows")

    def __init__(self, rows: list[Row], push: Push | None) -> None:
        self.rows = rows
        self.push = push


class TransformersPolicy:
    """A policy backed by a local ``transformers`` causal LM.

    Args:
        model_dir: A Hugging Face model directory (e.g. from :func:`build_tiny_lm` or
            :func:`load_smollm`).
        settings: Device, sampling and prompt settings.
        images: Accepted for parity with the HTTP back end; text-only models ignore it (they read
            image handles in the text).

    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        settings: LocalPolicySettings | None = None,
        images: ImageSource | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.settings = settings or LocalPolicySettings()
        self.name = self.settings.name or f"transformers:{self.model_dir.name}"
        self._images = images
        self._lock = threading.Lock()
        self._model: Any = None
        self._shadow: Shadow | None = None
        self._tok: Any = None
        self._eos: frozenset[int] = frozenset()
        self._special: frozenset[int] = frozenset()
        self._max_prompt = 0
        self._stitched: OrderedDict[str, array[int]] = OrderedDict()
        self._prefix = PrefixCache(int(self.settings.prefix_cache_mb * 2**20)) if self.settings.prefix_cache else None
        self._batcher: RowBatcher[_Job, list[tuple[list[int], list[float]]]] = RowBatcher(
            self._run_jobs,
            rows=lambda job: len(job.rows),
            limit=self.settings.batch_size,
            wait_s=self.settings.batch_wait_s,
            cancelled=lambda job: all(r.stop.is_set() for r in job.rows),
            solo=lambda job: job.push is not None,
        )

    # ---- public ----------------------------------------------------------------------------

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, settings: LocalPolicySettings | None = None) -> Self:
        """A policy over an already loaded causal LM and its tokenizer: nothing is loaded or copied.

        The policy samples from the very parameters it is given (a trainer's model, while it
        trains, is the use case), as they are: on their device, in their dtype and train/eval
        mode. So the load-time settings (``device``, ``dtype``, ``flush_denormal``,
        ``torch_threads``) are not applied; sampling and prompt settings are, and ``compute_dtype``
        (sample from a copy of the weights in that dtype, refreshed when they change). ``model_dir`` is the
        model's ``name_or_path`` (only names the policy and its turns).

        Args:
            model: A ``transformers`` causal LM (a PEFT-wrapped one too) with a ``generation_config``.
            tokenizer: Its tokenizer, with the chat template the turns are rendered with.
            settings: Sampling and prompt settings.

        Raises:
            TypeError: ``model`` has no ``generate`` or ``tokenizer`` no ``apply_chat_template``.

        """
        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"from_model needs a transformers model with generate(), got {type(model).__name__}")
        if not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TypeError(f"from_model needs a tokenizer with apply_chat_template(), got {type(tokenizer).__name__}")
        name = getattr(getattr(model, "config", None), "name_or_path", "") or "model"
        policy = cls(Path(str(name)), settings=settings)
        policy._adopt(model, tokenizer)
        return policy

    def load(self) -> None:
        """Load the model and tokenizer now (otherwise the first turn does). Blocking."""
        with self._lock:
            self._load()

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """One assistant turn. Raises only :class:`PolicyContextError` (``on_context_overflow='raise'``)."""
        return (await self.sample(request, 1))[0]

    async def sample(self, request: PolicyRequest, n: int) -> list[PolicyTurn]:
        """``n`` independent turns for the same request, from one batched generation.

        Raises:
            ValueError: ``n`` is below 1.
            PolicyContextError: The prompt is too long and ``on_context_overflow='raise'``.

        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(self._sample_sync, request, n, stop, abandon_on_cancel=True)
        finally:
            # On cancellation the worker thread is abandoned: make it stop at the next token.
            stop.set()

    async def respond_streaming(self, request: PolicyRequest, on_text: TextSink) -> PolicyTurn:
        """One assistant turn, its text sent to ``on_text`` piece by piece as the model writes it.

        The turn is the one :meth:`respond` would record (the same ids, log-probabilities and
        seed); the pieces concatenate to its text. Raises what :meth:`respond` raises.
        """
        stop = threading.Event()
        try:
            turns, sent = await relay(lambda push: self._sample_sync(request, 1, stop, push), on_text)
        finally:
            stop.set()
        turn = turns[0]
        if turn.text.startswith(sent) and len(turn.text) > len(sent):
            await on_text(turn.text[len(sent) :])
        return turn

    def prompt_ids(self, request: PolicyRequest) -> list[int]:
        """The prompt ids the next turn for ``request`` would get (stitched when possible). Blocking."""
        with self._lock:
            self._load()
            return self._prompt(request).ids

    # ---- worker thread ---------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        s = self.settings
        if s.flush_denormal:
            torch.set_flush_denormal(True)
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)
        tok = AutoTokenizer.from_pretrained(self.model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=s.dtype)
        model.to(s.device).eval()
        self._adopt(model, tok)

    def _adopt(self, model: Any, tok: Any) -> None:
        """Sample from this model and tokenizer: stop tokens, special ids and the prompt limit from them."""
        s = self.settings
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        self._eos = frozenset([eos] if isinstance(eos, int) else eos)
        self._special = frozenset(tok.all_special_ids)
        limit = getattr(model.config, "max_position_embeddings", None) or 32768
        self._max_prompt = s.max_prompt_tokens or max(1, int(limit) - s.max_new_tokens)
        self._tok, self._model = tok, model
        self._shadow = Shadow(model, s.compute_dtype) if needs_shadow(model, s.compute_dtype) else None

    def _render(self, request: PolicyRequest, messages: Sequence[Message], node: Node | None) -> str:
        chat = chat_messages(messages, node, instructions=self.settings.node_instructions)
        tools = tool_dicts(request.tools) if self.settings.render_tools and request.tools else None
        text = self._tok.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=True)
        return str(text)

    def _encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def _prompt(self, request: PolicyRequest) -> _Prompt:
        text = self._render(request, request.messages, request.node)
        if self.settings.stitch:
            for j in range(len(request.messages) - 1, -1, -1):
                m = request.messages[j]
                if m.role != "assistant":
                    continue
                head = self._render(request, request.messages[:j], m.node) + m.content
                ids = self._stitched.get(self._key(head))
                if ids is None or not text.startswith(head):
                    continue
                self._stitched.move_to_end(self._key(head))
                rest = self._encode(text[len(head) :])
                # The template closes the message with the stop token the model may have written.
                if ids and rest and ids[-1] == rest[0] and ids[-1] in self._special:
                    rest = rest[1:]
                return _Prompt(text, [*ids, *rest])
        return _Prompt(text, self._encode(text))

    def _remember(self, prompt: _Prompt, text: str, completion: Sequence[int]) -> None:
        size = self.settings.stitch_cache_size
        if not self.settings.stitch or size == 0:
            return
        key = self._key(prompt.text + text)
        self._stitched[key] = array("q", [*prompt.ids, *completion])
        self._stitched.move_to_end(key)
        while len(self._stitched) > size:
            self._stitched.popitem(last=False)

    def _sample_sync(
        self, request: PolicyRequest, n: int, stop: threading.Event, push: Push | None = None
    ) -> list[PolicyTurn]:
        started = time.perf_counter()
        with self._lock:
            self._load()
            prompt = self._prompt(request)
        if len(prompt.ids) > self._max_prompt:
            return self._overflow(len(prompt.ids), n, time.perf_counter() - started)
        seed = turn_seed(self.settings.seed, request.seed, request)
        rows = [Row(prompt.ids, row_seed(seed, i), self.settings.max_new_tokens, stop) for i in range(n)]
        generated = self._batcher.submit(_Job(rows, push))
        latency = time.perf_counter() - started
        turns = []
        for ids, logprobs in generated:
            text = str(self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
            with self._lock:
                self._remember(prompt, text, ids)
            turns.append(
                PolicyTurn(
                    text=text,
                    parsed=parse_turn(text),
                    model=self.model_dir.name,
                    prompt_token_ids=tuple(prompt.ids),
                    completion_token_ids=tuple(ids),
                    logprobs=tuple(logprobs),
                    latency_s=latency,
                )
            )
        return turns

    def _run_jobs(self, jobs: Sequence[_Job]) -> list[list[tuple[list[int], list[float]]]]:
        """One ``generate`` for every row of ``jobs`` (in the batcher's leading thread); rows split back per job."""
        s = self.settings
        pad = self._model.generation_config.pad_token_id or self._tok.pad_token_id or min(self._eos)
        sampling = Sampling(s.temperature, s.top_p, s.top_k, s.logprobs, self._eos, int(pad), s.max_time_s)
        push = jobs[0].push if len(jobs) == 1 else None
        streamer = TextPieces(self._tok, push) if push is not None else None
        model = self._model if self._shadow is None else self._shadow.model()
        rows = generate_rows(model, [r for job in jobs for r in job.rows], sampling, streamer, self._prefix)
        out, at = [], 0
        for job in jobs:
            out.append(rows[at : at + len(job.rows)])
            at += len(job.rows)
        return out

    def _overflow(self, length: int, n: int, latency: float) -> list[PolicyTurn]:
        message = f"the prompt has {length} tokens, over max_prompt_tokens={self._max_prompt}"
        if self.settings.on_context_overflow == "raise":
            raise PolicyContextError(message)
        error = FormatError(code="empty", message=f"no turn: {message}")
        turn = PolicyTurn(text="", parsed=ParsedTurn(errors=(error,)), model=self.model_dir.name, latency_s=latency)
        return [turn] * n
