"""A vision judge for real images: VIEScore-style ratings and checklist questions over any OpenAI-compatible server.

Three questions per output image, asked concurrently through :class:`~visioncreator.evals.judge.client.JudgeClient`
(structured output, retries, SQLite cache):

- **semantic consistency** (SC, 0-10): does the image do what the request asks? For a text-to-image
  task one rating; for an edit (input images given) two, *editing success* and *over-editing*
  (10: nothing changed beyond the instruction), and SC is their minimum.
- **perceptual quality** (PQ, 0-10), asked without the request so the content cannot sway it:
  *naturalness* and *artifacts* (10: none), PQ is their minimum.
- **checklist**: one yes/no question per checklist item (``consistency`` items need a second
  output image and are left out).

``overall = sqrt(SC * PQ)``: VIEScore's geometric mean of the minimum sub-scores (Ku et al. 2024,
"VIEScore: Towards Explainable Metrics for Conditional Image Synthesis Evaluation"; GEdit-Bench
reports the same three numbers on the same 0-10 scale). The prompts are our own wording of
VIEScore's rules.

Two modes. ``image`` sends the pictures as data URIs (a vision-language model). ``text`` is for
a text-only server: each picture is replaced by what ``inspect_image`` reports about it (the
synthetic ground truth where the file carries it, the offline detectors otherwise), as JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from visioncreator.evals.judge.cache import JudgeCache
from visioncreator.evals.judge.client import JudgeClient, JudgeError, reason_pattern, yes_no_model
from visioncreator.evals.judge.questions import checklist_question
from visioncreator.evals.judge.request import JudgeAnswer, JudgeRequest
from visioncreator.evals.results import JudgeScore
from visioncreator.tool_servers import TRUTH_KEY, InspectImageInput, SourceImage, decode_image
from visioncreator.tool_servers.synthetic import (
    CheckItem,
    GroundTruth,
    ObserverSettings,
    SyntheticBackend,
    SyntheticSettings,
)

__all__ = ["ImageDescriber", "JudgeMode", "VisionJudge", "describe_image"]

JudgeMode = Literal["image", "text"]
ImageDescriber = Callable[[bytes], Awaitable[str]]

_MAX_BYTES = 20 * 1024 * 1024
_MAX_PIXELS = 40_000_000

_SYSTEM = (
    "You are a meticulous professional digital artist who rates AI-generated images. Follow the rules "
    "exactly, be strict, and answer only with the JSON object the schema asks for."
)
_SC_T2I = (
    "Rate how well the AI-generated image follows the request, from 0 to 10: 0 means it does not follow "
    "the request at all, 10 means it follows every part of it (objects, counts, colours, positions, text, "
    "style). First give a short reason, then the score.\n\nRequest: {request}\n\n{images}"
)
_SC_EDIT = (
    "The first {n_inputs} image(s) are the input; the last image is the AI-edited result of the editing "
    "instruction. Give two scores from 0 to 10. editing_success: 0 means the edit was not done at all, 10 "
    "means it was done exactly as instructed. over_editing: 0 means the result no longer resembles the "
    "input, 10 means nothing changed beyond what the instruction asks. First give a short reason.\n\n"
    "Instruction: {request}\n\n{images}"
)
_PQ = (
    "Rate the image's perceptual quality, ignoring what it shows. naturalness, 0 to 10: 0 means it looks "
    "unnatural (wrong sense of distance, shadows, lighting), 10 means it looks natural. artifacts, 0 to 10: "
    "0 means heavy artefacts (distortion, blur, watermarks, broken shapes), 10 means none. First give a short "
    "reason.\n\n{images}"
)
_CHECKLIST = (
    "Answer each question about the last image with yes or no, strictly: answer yes only when the image "
    "clearly shows it.{inputs}\n\nRequest: {request}\n\n{questions}\n\n{images}"
)


@cache
def _models(reason_chars: int) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The SC (text-to-image), SC (edit) and PQ answer models, reason bounded by a pattern."""
    reason = (str, Field(pattern=reason_pattern(reason_chars)))
    score = (int, Field(ge=0, le=10))
    config = ConfigDict(extra="forbid")
    sc: type[BaseModel] = create_model("SemanticConsistency", __config__=config, reason=reason, score=score)
    edit: type[BaseModel] = create_model(
        "EditConsistency", __config__=config, reason=reason, editing_success=score, over_editing=score
    )
    pq: type[BaseModel] = create_model(
        "PerceptualQuality", __config__=config, reason=reason, naturalness=score, artifacts=score
    )
    return sc, edit, pq


async def describe_image(data: bytes) -> str:
    """What ``inspect_image`` reports about an image file, as compact JSON, for a text-only judge.

    A file written by the image store carries its synthetic ground truth, which is reported;
    any other image is described by the offline detectors. Volatile fields (handle, timings) are
    left out, so the same image always gets the same description (and the same cache key).

    Raises:
        ToolServerError: The bytes are not a supported image, or over the size limits.

    """
    image = await asyncio.to_thread(decode_image, data, max_bytes=_MAX_BYTES, max_pixels=_MAX_PIXELS)
    truth: GroundTruth | None = None
    raw = image.info.get(TRUTH_KEY)
    if isinstance(raw, str):
        try:
            truth = GroundTruth.model_validate_json(raw)
        except ValueError:
            truth = None
    handle = "img_" + hashlib.sha256(data).hexdigest()[:24]
    # The judge describes what is there: the exact scene, not the policy's noisy observer.
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0, observer=ObserverSettings.exact()))
    result = await backend.inspect_image(
        InspectImageInput(image=handle, questions=[]), SourceImage(handle, image, truth)
    )
    exclude: Any = {"handle": True, "generator_s": True, "answers": True, "analysis": {"detector_s"}}
    return result.model_dump_json(exclude=exclude, exclude_none=True)


@dataclass(frozen=True)
class _Images:
    """What one question sends: image files, or (text mode) a description of each in the prompt."""

    files: tuple[bytes, ...]
    text: str


class VisionJudge:
    """Score output images with an LLM judge: VIEScore SC, PQ and overall, and checklist answers.

    Args:
        client: The judge server's client.
        cache: Where answers are cached; ``None`` caches nothing.
        mode: ``image`` sends the images; ``text`` sends :func:`describe_image`'s description instead.
        describe: The describer for ``text`` mode.
        reason_chars: Longest free-text reason the schema allows.

    """

    def __init__(
        self,
        client: JudgeClient,
        cache: JudgeCache | None = None,
        *,
        mode: JudgeMode = "image",
        describe: ImageDescriber = describe_image,
        reason_chars: int = 300,
    ) -> None:
        if reason_chars < 1:
            raise ValueError(f"reason_chars must be at least 1, got {reason_chars}")
        self.client = client
        self.cache = cache
        self.mode = mode
        self._describe = describe
        self._reason_chars = reason_chars

    def _images(self, images: Sequence[bytes], names: Sequence[str], described: Sequence[str]) -> _Images:
        if self.mode == "image":
            return _Images(tuple(images), "")
        lines = [
            f"{name}, as described by an image-inspection tool (JSON): {text}"
            for name, text in zip(names, described, strict=True)
        ]
        return _Images((), "\n\n".join(lines))

    async def _ask(self, name: str, prompt: str, images: _Images, output: type[BaseModel]) -> JudgeAnswer[BaseModel]:
        request = JudgeRequest(name=name, system=_SYSTEM, prompt=prompt, images=images.files)
        return await self.client.ask(request, output, cache=self.cache)

    async def score(
        self,
        request: str,
        image_bytes: bytes,
        checklist: Sequence[CheckItem] = (),
        *,
        inputs: Sequence[bytes] = (),
        image: str = "",
    ) -> JudgeScore:
        """Judge one output image.

        Args:
            request: The task's request (for an edit, the instruction).
            image_bytes: The output image file.
            checklist: The checklist items about this image.
            inputs: The task's input image files (an edit is judged against them).
            image: The image's handle, for the record (default: ``sha256:`` of the bytes).

        Returns:
            The scores; a question the judge could not answer leaves its fields ``None`` and its
            reason in ``error``. ``cached`` is true when every answer came from the cache.

        """
        sc_model, edit_model, pq_model = _models(self._reason_chars)
        files = [*inputs, image_bytes]
        record = image or "sha256:" + hashlib.sha256(image_bytes).hexdigest()
        described = [""] * len(files)
        if self.mode == "text":
            try:
                described = list(await asyncio.gather(*(self._describe(f) for f in files)))
            except ValueError as exc:  # the safe decoder's errors: not an image, too large
                error = f"cannot describe the images: {type(exc).__name__}: {exc}"
                return JudgeScore(image=record, model=self.client.settings.model, error=error)
        names = [f"Input image {k}" for k in range(len(inputs))] + ["The image to rate"]
        both = self._images(files, names, described)
        alone = self._images([image_bytes], names[-1:], described[-1:])
        if inputs:
            sc_prompt = _SC_EDIT.format(n_inputs=len(inputs), request=request, images=both.text)
            sc_call = self._ask("edit_consistency", sc_prompt, both, edit_model)
        else:
            sc_prompt = _SC_T2I.format(request=request, images=alone.text)
            sc_call = self._ask("semantic_consistency", sc_prompt, alone, sc_model)
        pq_call = self._ask("perceptual_quality", _PQ.format(images=alone.text), alone, pq_model)
        items = [i for i in checklist if i.check != "consistency"]
        calls: list[Awaitable[JudgeAnswer[BaseModel]]] = [sc_call, pq_call]
        if items:
            questions = "\n".join(f"q{k}: {checklist_question(i)}" for k, i in enumerate(items, start=1))
            note = f" The first {len(inputs)} image(s) are the task's input." if inputs else ""
            seen = both if inputs else alone
            prompt = _CHECKLIST.format(inputs=note, request=request, questions=questions, images=seen.text)
            calls.append(self._ask("checklist", prompt, seen, yes_no_model("Checklist", len(items))))
        answers = await asyncio.gather(*calls, return_exceptions=True)
        return self._record(record, items, answers)

    def _record(
        self, image: str, items: Sequence[CheckItem], answers: Sequence[JudgeAnswer[BaseModel] | BaseException]
    ) -> JudgeScore:
        errors: list[str] = []
        values: list[dict[str, Any] | None] = []
        for answer in answers:
            if isinstance(answer, JudgeError | ValueError):
                errors.append(f"{type(answer).__name__}: {answer}")
                values.append(None)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                values.append(answer.value.model_dump())
        sc = pq = None
        if values[0] is not None:
            v = values[0]
            sc = float(v["score"]) if "score" in v else float(min(v["editing_success"], v["over_editing"]))
        if values[1] is not None:
            pq = float(min(values[1]["naturalness"], values[1]["artifacts"]))
        checks: dict[str, bool] = {}
        if len(values) > 2 and values[2] is not None:
            checks = {checklist_question(i): values[2][f"q{k}"] == "yes" for k, i in enumerate(items, start=1)}
        overall = math.sqrt(sc * pq) if sc is not None and pq is not None else None
        cached = all(isinstance(a, JudgeAnswer) and a.cached for a in answers)
        return JudgeScore(
            image=image,
            semantic_consistency=sc,
            perceptual_quality=pq,
            overall=overall,
            checklist=checks,
            model=self.client.settings.model,
            cached=cached,
            error="; ".join(errors) or None,
        )
