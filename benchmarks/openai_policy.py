"""Client-side cost of the ``openai`` policy, against the fake chat server on loopback.

What it measures is our overhead per turn (message conversion, JSON, HTTP on loopback, parsing),
not a model: the fake answers at once. Also the cost of encoding one image for a request, and
what the image cache saves.

Usage: PYTHONPATH=. python benchmarks/openai_policy.py [--turns 200] [--concurrency 16] [--history 40]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

from PIL import Image
from tests.fakes.chat_server import Completion, FakeChatServer

from visioncreator.policy import (
    Message,
    Observation,
    OpenAIPolicy,
    OpenAIPolicySettings,
    PolicyRequest,
    Task,
    ToolCall,
    ToolSpec,
    observation_message,
    system_message,
    task_message,
    write_tool_call,
)
from visioncreator.policy.openai import encode_image

HANDLE = "img_" + "cd" * 12
TOOLS = (ToolSpec(name="text_to_image", description="Make an image.", input_schema={"type": "object"}),)


def conversation(history: int, with_image: bool) -> PolicyRequest:
    messages = [system_message(TOOLS, {"max_turns": 64}), task_message(Task(request="a red fox"))]
    for k in range(history // 2):
        call = ToolCall(name="text_to_image", arguments={"prompt": f"a red fox {k}"}, step=1)
        obs = Observation(call_id=f"call_{k}_0", name="text_to_image", ok=True, result={"handle": HANDLE})
        messages.append(Message(role="assistant", content=write_tool_call(call), node="act"))
        tool = observation_message([obs])
        messages.append(tool if with_image else tool.model_copy(update={"images": ()}))
    return PolicyRequest(messages=tuple(messages), node="act", tools=TOOLS, seed=1)


class _Images:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, handle: str) -> bytes:
        return self.data


async def _rate(policy: OpenAIPolicy, request: PolicyRequest, turns: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await policy.respond(request)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(turns))), timeout=600)
    return turns / (time.perf_counter() - started)


async def main(turns: int, concurrency: int, history: int, image_history: int) -> None:
    out = io.BytesIO()
    Image.effect_noise((1024, 1024), 64).convert("RGB").save(out, format="PNG")
    png = out.getvalue()
    with FakeChatServer().running() as chat:
        chat.set(Completion(texts=["<think>ok</think>"]))
        settings = OpenAIPolicySettings(base_url=chat.base_url, model="fake", timeout_s=30)
        async with OpenAIPolicy(settings) as policy:
            await policy.respond(conversation(2, False))  # warm the connection
            for h in (2, history):
                request = conversation(h, False)
                for c in (1, concurrency):
                    rate = await _rate(policy, request, turns, c)
                    print(f"text-only   history={h:>3} concurrency={c:>3}: {rate:8.1f} turns/s")
        async with OpenAIPolicy(settings, images=_Images(png)) as policy:
            # Every tool message re-sends its image: keep the history short here.
            request = conversation(image_history, True)
            started = time.perf_counter()
            await policy.respond(request)
            ms = 1000 * (time.perf_counter() - started)
            print(f"first turn, 1024x1024 noise image (worst case) encoded once as JPEG: {ms:.1f} ms")
            rate = await _rate(policy, request, max(turns // 10, 1), concurrency)
            label = f"{image_history // 2} images cached, history={image_history} concurrency={concurrency}"
            print(f"{label}: {rate:8.1f} turns/s")
    for fmt in ("PNG", "JPEG"):
        s = OpenAIPolicySettings(base_url="http://127.0.0.1:1/v1", model="m", image_format=fmt)
        started = time.perf_counter()
        uri = encode_image(png, s)
        ms = 1000 * (time.perf_counter() - started)
        print(f"encode_image 1024x1024 -> 768 {fmt}: {ms:.1f} ms, {len(uri) / 1024:.0f} KiB data URI")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--history", type=int, default=40)
    parser.add_argument("--image-history", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.concurrency, args.history, args.image_history))
