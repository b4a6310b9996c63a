"""Judge plumbing against a real vLLM CPU server: every judgement parses, and a second pass is all cache hits.

The server serves the project's tiny random text model, so the ratings mean nothing: what this
measures is the plumbing. Images are rendered by the synthetic environment and described to the
judge by ``inspect_image`` (text mode: a random vision-language model needs torchvision, which
cannot be installed beside the CPU torch here). Structured output is xgrammar's; every free-text
reason is bounded by a regex pattern. Also one ``plan`` reward through the LLM-judge variant.

Usage: PYTHONPATH=. python benchmarks/judge_plumbing.py [--images 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.vllm.conftest import running_server

from visioncreator.evals import JudgeCache, JudgeClient, JudgeScore, JudgeSettings, VisionJudge
from visioncreator.graph import Timings, Trajectory, TurnRecord
from visioncreator.policy import Task, parse_turn
from visioncreator.rl import RewardContext
from visioncreator.rl.rewards import PlanJudge
from visioncreator.tool_servers import ImageStore, TextToImageInput
from visioncreator.tool_servers.synthetic import CheckItem, SyntheticBackend, SyntheticSettings

PROMPTS = ("two red dogs next to a blue car", "a yellow cat", "three green apples", "a pink bus with the text SALE")


async def render(store: ImageStore, prompt: str, seed: int) -> bytes:
    """A synthetic image, stored (so its file carries the ground truth ``inspect_image`` reports)."""
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    made = await backend.text_to_image(TextToImageInput(prompt=prompt, width=256, height=256, seed=seed))
    return store.read_bytes(store.put(made.image, made.truth).handle)


def judge_settings(base_url: str, model: str) -> JudgeSettings:
    """Judge settings for the tiny random model: short answers, generous timeouts."""
    return JudgeSettings(base_url=base_url, model=model, max_tokens=200, timeout_s=120.0, parse_retries=0)


async def judge_pass(judge: VisionJudge, images: list[tuple[str, bytes]]) -> tuple[list[JudgeScore], float]:
    """Score every image concurrently; the scores and the wall time."""
    checklist = (CheckItem(check="object", subject="dog"), CheckItem(check="text", value="SALE"))
    start = time.perf_counter()
    scores = await asyncio.gather(*(judge.score(p, png, checklist) for p, png in images))
    return list(scores), time.perf_counter() - start


def plan_trajectory() -> Trajectory:
    """A one-step plan for the first prompt."""
    plan = [{"step": 1, "goal": "the scene", "tool": "text_to_image", "prompt": PROMPTS[0]}]
    text = f"<plan>{json.dumps(plan)}</plan>"
    turn = TurnRecord(index=0, node="plan", text=text, segments=parse_turn(text).segments)
    return Trajectory(
        thread_id="bench", seed=0, task=Task(request=PROMPTS[0]), messages=[], turns=[turn], tool_calls=[],
        answer=[], termination="answered", timings=Timings(wall_s=0.0, policy_s=0.0, tools_s=0.0),
    )  # fmt: skip


async def plumbing(base_url: str, model: str, work: Path, n_images: int) -> dict[str, Any]:
    """Two judge passes over ``n_images`` images and two plan rewards; the figures."""
    store = ImageStore(work / "store")
    images = [(PROMPTS[i % len(PROMPTS)], await render(store, PROMPTS[i % len(PROMPTS)], i)) for i in range(n_images)]
    cache = JudgeCache(work / "judge_cache.sqlite")
    figures: dict[str, Any] = {}
    async with JudgeClient(judge_settings(base_url, model)) as client:
        judge = VisionJudge(client, cache, mode="text", reason_chars=40)
        for name in ("first", "second"):
            before = (client.requests, cache.hits, cache.misses)
            scores, wall = await judge_pass(judge, images)
            figures[name] = {
                "images": len(scores),
                "wall_s": round(wall, 2),
                "requests": client.requests - before[0],
                "cache_hits": cache.hits - before[1],
                "cache_misses": cache.misses - before[2],
                "errors": [s.error for s in scores if s.error],
                "all_cached": all(s.cached for s in scores),
                "overall": [None if s.overall is None else round(s.overall, 2) for s in scores],
            }
        reward = PlanJudge(client, cache, reason_chars=40)
        context = RewardContext(checklist=(CheckItem(check="count", subject="dog", value=2),))
        plans = [await reward(plan_trajectory(), context) for _ in range(2)]
        figures["plan_reward"] = {"value": plans[0].value, "second_cached": plans[1].details["cached"]}
    figures["cache_entries"] = len(cache)
    cache.close()
    return figures


async def main(n_images: int) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        print(f"vLLM {server.install.version} at {server.url}, model {server.model} (tiny, random)")
        figures = await plumbing(server.base_url, server.model, Path(tmp), n_images)
    for name in ("first", "second"):
        f = figures[name]
        print(
            f"{name:6s} pass: {f['images']} images, {f['wall_s']:.2f} s, {f['requests']} requests, "
            f"cache {f['cache_hits']} hits / {f['cache_misses']} misses, {len(f['errors'])} errors, "
            f"all cached: {f['all_cached']}, overall {f['overall']}"
        )
    print(f"plan reward {figures['plan_reward']}, cache entries {figures['cache_entries']}")
    for error in figures["first"]["errors"]:
        print("error:", error)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=4)
    asyncio.run(main(parser.parse_args().images))
