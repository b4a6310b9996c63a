"""The vision judge against the real vLLM CPU server: judgements parse under xgrammar, and are cached.

The tiny random text model rates nothing meaningfully; images are described by ``inspect_image``
(text mode). ``benchmarks/judge_plumbing.py`` prints the same figures.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from visioncreator.evals import JudgeCache, JudgeClient, JudgeSettings
from visioncreator.evals.judge import VisionJudge
from visioncreator.policy.vllm import VLLMServer
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.items import CheckItem

pytestmark = pytest.mark.vllm


async def test_judgements_parse_and_the_second_pass_is_all_cache_hits(vllm_server: VLLMServer, tmp_path: Path) -> None:
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    store = ImageStore(tmp_path / "store")
    images = []
    for seed, prompt in enumerate(("two red dogs next to a blue car", "a pink bus with the text SALE")):
        made = await backend.text_to_image(TextToImageInput(prompt=prompt, width=256, height=256, seed=seed))
        images.append((prompt, store.read_bytes(store.put(made.image, made.truth).handle)))
    checklist = (CheckItem(check="object", subject="dog"), CheckItem(check="text", value="SALE"))
    settings = JudgeSettings(base_url=vllm_server.base_url, model=vllm_server.model, max_tokens=200, parse_retries=0)
    cache = JudgeCache(tmp_path / "judge_cache.sqlite")
    async with JudgeClient(settings) as client:
        judge = VisionJudge(client, cache, mode="text", reason_chars=40)
        with anyio.fail_after(240):
            first = [await judge.score(prompt, png, checklist) for prompt, png in images]
        sent = client.requests
        with anyio.fail_after(60):
            second = [await judge.score(prompt, png, checklist) for prompt, png in images]
    assert [s.error for s in first] == [None, None]
    for score in first:
        assert score.semantic_consistency is not None
        assert score.perceptual_quality is not None
        assert score.overall is not None
        assert 0.0 <= score.overall <= 10.0
        assert len(score.checklist) == 2
        assert not score.cached
    assert sent == 6  # SC, PQ and checklist per image, each parsed at the first answer
    assert all(s.cached for s in second)
    assert client.requests == sent
    assert [s.model_dump(exclude={"cached"}) for s in second] == [s.model_dump(exclude={"cached"}) for s in first]
    assert (cache.hits, cache.misses, len(cache)) == (6, 6, 6)
    cache.close()
