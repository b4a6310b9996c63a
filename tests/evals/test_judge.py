"""The vision judge and its client against a fault-injecting fake server: retries, parse errors, caching, modes."""

from __future__ import annotations

import io
import json
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from tests.fakes.chat_server import Completion, FakeChatServer, Raw, Status
from visioncreator.evals import (
    JudgeCache,
    JudgeClient,
    JudgeConnectionError,
    JudgeHTTPError,
    JudgeParseError,
    JudgeRequest,
    JudgeSettings,
)
from visioncreator.evals.judge import VisionJudge, describe_image
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.items import CheckItem

ANSWERS: dict[str, dict[str, Any]] = {
    "semantic_consistency": {"reason": "follows the request", "score": 8},
    "edit_consistency": {"reason": "edit done", "editing_success": 9, "over_editing": 4},
    "perceptual_quality": {"reason": "a bit flat", "naturalness": 9, "artifacts": 6},
    "checklist": {"q1": "yes", "q2": "no"},
}
CHECKLIST = (
    CheckItem(check="count", subject="dog", value=2),
    CheckItem(check="color", subject="dog", value="red"),
    CheckItem(check="consistency", subject="dog", image=1, reference=0),
)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: str
    score: int


def _answer(body: dict[str, Any]) -> str:
    return json.dumps(ANSWERS[body["response_format"]["json_schema"]["name"]])


def _png(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as fake:
        yield fake


@pytest.fixture
def chat(server: FakeChatServer) -> FakeChatServer:
    server.set(Completion(texts=_answer))
    return server


def settings(chat: FakeChatServer, **overrides: Any) -> JudgeSettings:
    values: dict[str, Any] = {"base_url": chat.base_url, "model": "judge-model", "backoff_s": 0.01, "timeout_s": 5.0}
    return JudgeSettings(**(values | overrides))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_scores_are_viescore_and_the_second_call_is_cached(chat: FakeChatServer, tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "judge.sqlite")
    async with JudgeClient(settings(chat)) as client:
        judge = VisionJudge(client, cache)
        with anyio.fail_after(30):
            first = await judge.score("two red dogs", _png(), CHECKLIST, image="img_" + "a" * 24)
            second = await judge.score("two red dogs", _png(), CHECKLIST, image="img_" + "a" * 24)
    assert first.semantic_consistency == 8.0
    assert first.perceptual_quality == 6.0  # min(naturalness, artifacts)
    assert first.overall == pytest.approx(math.sqrt(8.0 * 6.0))
    assert first.checklist == {"Are there exactly 2 dog (count every dog)?": True, "Is every dog red?": False}
    assert first.model == "judge-model"
    assert first.error is None
    assert not first.cached
    assert second.cached
    assert second.model_dump(exclude={"cached"}) == first.model_dump(exclude={"cached"})
    assert len(chat.requests) == 3  # SC, PQ, checklist; nothing more for the second call
    assert (cache.hits, cache.misses, len(cache)) == (3, 3, 3)
    by_name = {r["response_format"]["json_schema"]["name"]: r for r in chat.requests}
    sc = by_name["semantic_consistency"]
    assert sc["model"] == "judge-model"
    assert sc["temperature"] == 0.0
    schema = sc["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"maximum": 10, "minimum": 0, "title": "Score", "type": "integer"}
    assert schema["properties"]["reason"]["pattern"].startswith("^[A-Za-z0-9")
    user = sc["messages"][-1]["content"]
    assert "Request: two red dogs" in user[0]["text"]
    assert user[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "Request" not in by_name["perceptual_quality"]["messages"][-1]["content"][0]["text"]
    cache.close()
    # The cache outlives the process: a new client and cache on the same file ask nothing.
    reopened = JudgeCache(tmp_path / "judge.sqlite")
    chat.set(Status(500))
    async with JudgeClient(settings(chat, max_retries=0)) as client:
        with anyio.fail_after(30):
            third = await VisionJudge(client, reopened).score("two red dogs", _png(), CHECKLIST, image="x")
    assert third.cached
    assert chat.requests == []
    reopened.close()


async def test_an_edit_is_judged_against_its_input(chat: FakeChatServer) -> None:
    async with JudgeClient(settings(chat)) as client:
        with anyio.fail_after(30):
            score = await VisionJudge(client).score("make it blue", _png("blue"), inputs=[_png("red")])
    assert score.semantic_consistency == 4.0  # min(editing_success, over_editing)
    assert score.overall == pytest.approx(math.sqrt(4.0 * 6.0))
    assert score.checklist == {}
    assert score.image.startswith("sha256:")
    edit = next(r for r in chat.requests if r["response_format"]["json_schema"]["name"] == "edit_consistency")
    assert [c["type"] for c in edit["messages"][-1]["content"]] == ["text", "image_url", "image_url"]


async def test_transport_errors_5xx_and_garbage_are_retried(chat: FakeChatServer) -> None:
    chat.set(Status(503), Status(429), Raw(b"<html>busy</html>"), Raw(b'{"choices": []}'), Completion(texts=["{"]),
             Completion(texts=['{"verdict": "ok", "score": 3}']))  # fmt: skip
    request = JudgeRequest(name="verdict", prompt="rate it")
    async with JudgeClient(settings(chat, max_retries=2, parse_retries=3)) as client:
        with anyio.fail_after(30):
            answer = await client.ask(request, Verdict)
    assert answer.value == Verdict(verdict="ok", score=3)
    assert answer.requests == 6
    assert client.requests == 6
    assert not answer.cached


async def test_unparseable_answers_raise_after_the_retries_and_are_not_cached(chat: FakeChatServer) -> None:
    chat.set(Completion(texts=['{"verdict": "ok", "score": "many"}']))
    cache = JudgeCache(":memory:")
    async with JudgeClient(settings(chat, parse_retries=2)) as client:
        with anyio.fail_after(30), pytest.raises(JudgeParseError, match="does not fit the verdict schema") as raised:
            await client.ask(JudgeRequest(name="verdict", prompt="rate it"), Verdict, cache=cache)
    assert len(chat.requests) == 3
    assert raised.value.raw == '{"verdict": "ok", "score": "many"}'
    assert len(cache) == 0

    chat.set(Completion(texts=["I think it is fine."]))
    async with JudgeClient(settings(chat, parse_retries=1)) as client:
        with anyio.fail_after(30):
            score = await VisionJudge(client, cache).score("a dog", _png(), CHECKLIST[:1])
    assert score.semantic_consistency is None
    assert score.overall is None
    assert score.checklist == {}
    assert score.error is not None
    assert score.error.count("JudgeParseError") == 3
    assert len(cache) == 0


async def test_client_errors_are_not_retried_and_outages_name_the_server(chat: FakeChatServer) -> None:
    chat.set(Status(400, "schema not supported"))
    async with JudgeClient(settings(chat, max_retries=3)) as client:
        with anyio.fail_after(30), pytest.raises(JudgeHTTPError, match="HTTP 400: schema not supported"):
            await client.ask(JudgeRequest(name="verdict", prompt="x"), Verdict)
    assert len(chat.requests) == 1
    chat.set(Status(502))
    async with JudgeClient(settings(chat, max_retries=2)) as client:
        with anyio.fail_after(30), pytest.raises(JudgeHTTPError, match="HTTP 502"):
            await client.ask(JudgeRequest(name="verdict", prompt="x"), Verdict)
    assert len(chat.requests) == 3
    url = f"http://127.0.0.1:{_free_port()}/v1"
    async with JudgeClient(JudgeSettings(base_url=url, model="m", max_retries=1, backoff_s=0.01)) as client:
        with anyio.fail_after(30), pytest.raises(JudgeConnectionError, match=r"unreachable after 2 tries"):
            await client.ask(JudgeRequest(name="verdict", prompt="x"), Verdict)
    assert client.requests == 2


async def test_cache_key_covers_model_prompt_images_and_schema(chat: FakeChatServer) -> None:
    cache = JudgeCache(":memory:")
    base = JudgeRequest(name="verdict", prompt="rate it", images=(_png(),))
    chat.set(Completion(texts=['{"verdict": "ok", "score": 3}']))
    variants = [
        (base, "m1"),
        (base, "m1"),
        (base, "m2"),
        (base.model_copy(update={"prompt": "rate it again"}), "m1"),
        (base.model_copy(update={"images": (_png("blue"),)}), "m1"),
    ]
    cached = []
    for request, model in variants:
        async with JudgeClient(settings(chat, model=model)) as client:
            with anyio.fail_after(30):
                cached.append((await client.ask(request, Verdict, cache=cache)).cached)
    assert cached == [False, True, False, False, False]
    assert len(chat.requests) == 4
    with pytest.raises(ValueError, match="PNG, JPEG or WEBP"):
        JudgeClient(settings(chat)).body(JudgeRequest(name="v", prompt="x", images=(b"GIF89a",)), {})


async def test_text_mode_sends_the_inspect_image_description(chat: FakeChatServer, tmp_path: Path) -> None:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    generated = await backend.text_to_image(TextToImageInput(prompt="two red dogs", width=256, height=256, seed=1))
    store = ImageStore(tmp_path / "store")
    png = store.read_bytes(store.put(generated.image, generated.truth).handle)
    description = json.loads(await describe_image(png))
    assert description["known"] is True
    assert description["counts"] == {"dog": 2}
    assert "handle" not in description
    async with JudgeClient(settings(chat)) as client:
        judge = VisionJudge(client, JudgeCache(":memory:"), mode="text")
        with anyio.fail_after(60):
            score = await judge.score("two red dogs", png, CHECKLIST[:2])
            again = await judge.score("two red dogs", png, CHECKLIST[:2])
    assert score.overall == pytest.approx(math.sqrt(48.0))
    assert again.cached
    for body in chat.requests:
        text = body["messages"][-1]["content"]
        assert isinstance(text, str)  # no image parts: a text-only server
        assert "described by an image-inspection tool" in text
        assert '"counts":{"dog":2}' in text
    bad = await VisionJudge(JudgeClient(settings(chat)), mode="text").score("x", b"not an image")
    assert bad.error is not None
    assert "cannot describe the images: UnsupportedImageError" in bad.error
