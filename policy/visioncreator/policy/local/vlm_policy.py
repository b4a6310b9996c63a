"""The local vision-language policy: a ``transformers`` VLM that sees the images of its conversation.

:class:`TransformersVLMPolicy` records what RL needs, as :class:`~visioncreator.policy.local.TransformersPolicy`
does for text models: exact prompt and completion token ids, chained from turn to turn, and one
log-probability per completion token. What differs is the images.

How a prompt is built. Each message is rendered by the model's chat template (our ChatML
template for the tiny models, :mod:`visioncreator.policy.chat_template`) with one image
placeholder (the processor's ``image_token``, ``<image>`` for Idefics3/SmolVLM) per image handle
it carries, after its text, in handle order; a node's instruction is kept in the history as
:func:`~visioncreator.policy.chat_template.chat_messages` keeps it. The processor then expands
every placeholder into the model's image tokens (Idefics3: ``<fake_token_around_image><global-img>``,
``image_seq_len`` ``<image>`` tokens, ``<fake_token_around_image>``), and the images' pixel values
go to ``generate``. So the prompt ids hold each image already expanded, in message order: the
order in which a trainer reads the same images back (``visioncreator.rl.train.rollout.images_seen``).
A literal placeholder in a message's text is escaped (``<image>`` becomes ``< image>``), so that
placeholders and images always pair up.

Token-exact multi-turn prompts. As in the text policy, a turn generated here is remembered
(prompt ids + completion ids, images expanded) and a later prompt that starts with it is built as
those ids + the ids of the rest of the rendering, the rest's images expanded by the processor. So
turn k+1's prompt ids begin with turn k's prompt ids and completion ids, always.

Images are read through an :class:`~visioncreator.policy.openai.ImageSource` (``async read(handle)
-> bytes``: the graph's tool client or an image store) and decoded within limits (PNG, JPEG or
WebP; bytes and pixels capped before decoding). The model runs in a worker thread, one generation
at a time. Needs the ``transformers`` extra (torch, transformers, pillow).
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

from visioncreator.policy.chat_template import tool_dicts
from visioncreator.policy.errors import PolicyContextError
from visioncreator.policy.format import parse_turn
from visioncreator.policy.images import decode_image
from visioncreator.policy.local.settings import LocalPolicySettings
from visioncreator.policy.openai.messages import ImageSource
from visioncreator.policy.openai.policy import turn_seed
from visioncreator.policy.prompting import node_instruction
from visioncreator.policy.types import FormatError, Message, Node, ParsedTurn, PolicyRequest, PolicyTurn

__all__ = ["TransformersVLMPolicy"]


class _Prompt:
    __slots__ = ("ids", "images", "text")

    def __init__(self, text: str, ids: list[int], images: list[Any]) -> None:
        self.text = text
        self.ids = ids
        self.images = images


class TransformersVLMPolicy:
    """A policy backed by a local ``transformers`` vision-language model and its processor.

    Args:
        model: A VLM with ``generate`` that takes ``pixel_values`` (e.g. ``Idefics3ForConditionalGeneration``).
        processor: Its processor: an ``image_token``, an ``image_processor`` and a ``tokenizer``
            with the chat template turns are rendered with.
        images: Where the bytes of a message's image handles come from.
        settings: Sampling and prompt settings (the load-time ones apply to :meth:`load` only).
        max_image_bytes: Largest image file accepted.
        max_image_pixels: Largest image accepted (width x height), checked before decoding.

    Raises:
        TypeError: ``model`` has no ``generate`` or ``processor`` is not a VLM processor.

    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        images: ImageSource,
        settings: LocalPolicySettings | None = None,
        max_image_bytes: int = 32 * 1024 * 1024,
        max_image_pixels: int = 4096 * 4096,
    ) -> None:
        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"a VLM policy needs a transformers model with generate(), got {type(model).__name__}")
        for attribute in ("image_token", "image_processor", "tokenizer"):
            if getattr(processor, attribute, None) is None:
                raise TypeError(f"a VLM policy needs a processor with {attribute}, got {type(processor).__name__}")
        self.settings = settings or LocalPolicySettings()
        name = getattr(getattr(model, "config", None), "name_or_path", "") or "vlm"
        self._model_name = Path(str(name)).name
        self.name = self.settings.name or f"transformers-vlm:{self._model_name}"
        self._model, self._processor, self._source = model, processor, images
        self._tok = processor.tokenizer
        self._placeholder = str(processor.image_token)
        self._max_image_bytes, self._max_image_pixels = max_image_bytes, max_image_pixels
        self._lock = threading.Lock()
        self._stitched: OrderedDict[str, array[int]] = OrderedDict()
        eos = model.generation_config.eos_token_id
        eos = self._tok.eos_token_id if eos is None else eos
        self._eos = frozenset([eos] if isinstance(eos, int) else eos)
        self._special = frozenset(self._tok.all_special_ids)
        limit = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", None) or 32768
        self._max_prompt = self.settings.max_prompt_tokens or max(1, int(limit) - self.settings.max_new_tokens)

    @classmethod
    def load(cls, model_dir: str | Path, *, images: ImageSource, settings: LocalPolicySettings | None = None) -> Self:
        """Load a VLM directory (``AutoModelForImageTextToText`` and ``AutoProcessor``) on the settings' device."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        s = settings or LocalPolicySettings()
        if s.flush_denormal:
            torch.set_flush_denormal(True)
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)
        processor = AutoProcessor.from_pretrained(model_dir)  # type: ignore[no-untyped-call]
        model: Any = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=s.dtype)
        model.to(s.device).eval()
        return cls(model, processor, images=images, settings=s)

    @property
    def model(self) -> Any:
        """The model it samples from (the very object it was given: live weights)."""
        return self._model

    @property
    def processor(self) -> Any:
        """The processor that renders and expands its prompts."""
        return self._processor

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """One assistant turn. Raises only :class:`PolicyContextError` (``on_context_overflow='raise'``)."""
        return (await self.sample(request, 1))[0]

    async def sample(self, request: PolicyRequest, n: int) -> list[PolicyTurn]:
        """``n`` independent turns for the same request, from one batched generation.

        Raises:
            ValueError: ``n`` is below 1, or an image is not a PNG/JPEG/WebP within the limits.
            PolicyContextError: The prompt is too long and ``on_context_overflow='raise'``.

        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        images = await self.images_of(request.messages)
        stop = threading.Event()
        try:
            return await anyio.to_thread.run_sync(self._sample_sync, request, images, n, stop, abandon_on_cancel=True)
        finally:
            stop.set()  # a cancelled call's abandoned worker stops at the next token

    async def images_of(self, messages: Sequence[Message]) -> list[Any]:
        """The images of ``messages``, decoded (RGB), in placeholder order: message by message, handle by handle."""
        return [self._decode(await self._source.read(h)) for m in messages for h in m.images]

    async def prompt_ids(self, request: PolicyRequest) -> list[int]:
        """The prompt ids the next turn for ``request`` would get (stitched when possible, images expanded)."""
        images = await self.images_of(request.messages)
        return await anyio.to_thread.run_sync(self._locked_prompt, request, images)

    # ---- worker thread ---------------------------------------------------------------------

    def _locked_prompt(self, request: PolicyRequest, images: list[Any]) -> list[int]:
        with self._lock:
            return self._prompt(request, images).ids

    def _decode(self, data: bytes) -> Any:
        return decode_image(data, max_bytes=self._max_image_bytes, max_pixels=self._max_image_pixels)

    def _chat(self, messages: Sequence[Message], node: Node | None) -> list[dict[str, Any]]:
        """Chat-template messages: the text (placeholders escaped) and one placeholder per image after it."""
        instructions = self.settings.node_instructions
        out: list[dict[str, Any]] = []
        for m in messages:
            if instructions and m.role == "assistant" and m.node is not None:
                out.append({"role": "user", "content": node_instruction(m.node)})
            out.append({"role": m.role, "content": self._content(m)})
        if instructions and node is not None:
            out.append({"role": "user", "content": node_instruction(node)})
        return out

    def _content(self, message: Message) -> str:
        text = message.content.replace(self._placeholder, self._placeholder.replace("<", "< ", 1))
        return text + "".join(f"\n{self._placeholder}" for _ in message.images)

    def _render(self, request: PolicyRequest, messages: Sequence[Message], node: Node | None) -> str:
        tools = tool_dicts(request.tools) if self.settings.render_tools and request.tools else None
        text = self._tok.apply_chat_template(
            self._chat(messages, node), tools=tools, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def _encode(self, text: str, images: list[Any]) -> list[int]:
        if not images:
            return list(self._tok(text, add_special_tokens=False)["input_ids"])
        ids = self._processor(text=[text], images=[images], add_special_tokens=False)["input_ids"][0]
        return [int(i) for i in ids]

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def _prompt(self, request: PolicyRequest, images: list[Any]) -> _Prompt:
        messages = request.messages
        text = self._render(request, messages, request.node)
        if self.settings.stitch:
            for j in range(len(messages) - 1, -1, -1):
                m = messages[j]
                if m.role != "assistant":
                    continue
                head = self._render(request, messages[:j], m.node) + self._content(m)
                ids = self._stitched.get(self._key(head))
                if ids is None or not text.startswith(head):
                    continue
                self._stitched.move_to_end(self._key(head))
                seen = sum(len(earlier.images) for earlier in messages[: j + 1])
                rest = self._encode(text[len(head) :], images[seen:])
                # The template closes the message with the stop token the model may have written.
                if ids and rest and ids[-1] == rest[0] and ids[-1] in self._special:
                    rest = rest[1:]
                return _Prompt(text, [*ids, *rest], images)
        return _Prompt(text, self._encode(text, images), images)

    def _remember(self, prompt: _Prompt, text: str, completion: Sequence[int]) -> None:
        size = self.settings.stitch_cache_size
        if not self.settings.stitch or size == 0:
            return
        key = self._key(prompt.text + text.replace(self._placeholder, self._placeholder.replace("<", "< ", 1)))
        self._stitched[key] = array("q", [*prompt.ids, *completion])
        self._stitched.move_to_end(key)
        while len(self._stitched) > size:
            self._stitched.popitem(last=False)

    def _sample_sync(
        self, request: PolicyRequest, images: list[Any], n: int, stop: threading.Event
    ) -> list[PolicyTurn]:
        with self._lock:
            started = time.perf_counter()
            prompt = self._prompt(request, images)
            if len(prompt.ids) > self._max_prompt:
                return self._overflow(len(prompt.ids), n, time.perf_counter() - started)
            rows = self._generate(prompt, n, turn_seed(self.settings.seed, request.seed, request), stop)
            latency = time.perf_counter() - started
            turns = []
            for ids, logprobs in rows:
                text = str(self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
                self._remember(prompt, text, ids)
                turns.append(
                    PolicyTurn(
                        text=text,
                        parsed=parse_turn(text),
                        model=self._model_name,
                        prompt_token_ids=tuple(prompt.ids),
                        completion_token_ids=tuple(ids),
                        logprobs=tuple(logprobs),
                        latency_s=latency,
                    )
                )
            return turns

    def _overflow(self, length: int, n: int, latency: float) -> list[PolicyTurn]:
        message = f"the prompt has {length} tokens, over max_prompt_tokens={self._max_prompt}"
        if self.settings.on_context_overflow == "raise":
            raise PolicyContextError(message)
        error = FormatError(code="empty", message=f"no turn: {message}")
        turn = PolicyTurn(text="", parsed=ParsedTurn(errors=(error,)), model=self._model_name, latency_s=latency)
        return [turn] * n

    def _generate(
        self, prompt: _Prompt, n: int, seed: int | None, stop: threading.Event
    ) -> list[tuple[list[int], list[float]]]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        s = self.settings
        greedy = s.temperature == 0
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            top_k=None if greedy else s.top_k,
            max_new_tokens=s.max_new_tokens,
            max_time=s.max_time_s,
            num_return_sequences=n,
            eos_token_id=sorted(self._eos),
            pad_token_id=self._model.generation_config.pad_token_id or self._tok.pad_token_id or min(self._eos),
            return_dict_in_generate=True,
            output_scores=s.logprobs == "processed",
            output_logits=s.logprobs == "raw",
        )
        device = self._model.device
        input_ids = torch.tensor([prompt.ids], dtype=torch.long, device=device)
        pixels: dict[str, Any] = {}
        if prompt.images:
            encoded = self._processor.image_processor(images=[prompt.images], return_tensors="pt")
            dtype = next(self._model.parameters()).dtype
            pixels = {k: v.to(device) for k, v in encoded.items() if k in ("pixel_values", "pixel_attention_mask")}
            pixels["pixel_values"] = pixels["pixel_values"].to(dtype)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_Stop()]),
                **pixels,
            )
        steps = out.scores if s.logprobs == "processed" else out.logits
        new = out.sequences[:, input_ids.shape[1] :]
        if not steps:
            return [([], []) for _ in range(n)]
        logp = torch.log_softmax(torch.stack(steps, dim=1).float(), dim=-1)  # (n, T, V)
        chosen = logp.gather(-1, new[:, : logp.shape[1], None]).squeeze(-1)
        rows = []
        for i in range(n):
            ids = new[i].tolist()
            end = next((t + 1 for t, tok in enumerate(ids) if tok in self._eos), len(ids))
            rows.append((ids[:end], chosen[i, :end].tolist()))
        return rows
