"""The micro-batcher with a plain function as the batch runner (real threads, no torch)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import anyio
import pytest
from tests.tool_servers.diffusion.conftest import eventually

from visioncreator.tool_servers.diffusion.batching import BatchCancelled, MicroBatcher, Stop


class _Recorder:
    """A batch runner that records its batches and can be held at a gate or made to loop on steps."""

    def __init__(self, *, steps: int = 0, step_s: float = 0.0) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.steps_run = 0
        self.stopped = 0
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self._steps = steps
        self._step_s = step_s

    def __call__(self, key: str, requests: Sequence[int], stop: Stop) -> list[str]:
        self.batches.append((key, list(requests)))
        self.started.set()
        self.gate.wait(10)
        for _ in range(self._steps):
            time.sleep(self._step_s)
            self.steps_run += 1
            if stop.is_set():
                self.stopped += 1
                stop.check()
        if key == "boom":
            raise RuntimeError("pipeline exploded")
        return [f"{key}:{request}" for request in requests]


def _batcher(recorder: _Recorder, *, limit: int = 8, wait_s: float = 0.05) -> MicroBatcher[str, int, str]:
    return MicroBatcher(recorder, limit=lambda _key: limit, wait_s=wait_s)


async def test_concurrent_requests_with_one_key_share_a_batch_and_get_their_own_results() -> None:
    recorder = _Recorder()
    batcher = _batcher(recorder)
    with anyio.fail_after(10):
        results = await asyncio.gather(*(batcher.submit("a", i) for i in range(5)))
    assert results == [f"a:{i}" for i in range(5)]
    assert recorder.batches == [("a", [0, 1, 2, 3, 4])]
    await batcher.aclose()


async def test_batches_respect_the_limit_and_never_mix_keys() -> None:
    recorder = _Recorder()
    batcher = _batcher(recorder, limit=3)
    with anyio.fail_after(10):
        results = await asyncio.gather(*(batcher.submit("ab"[i % 2], i) for i in range(10)))
    assert results == [f"{'ab'[i % 2]}:{i}" for i in range(10)]
    assert all(len(requests) <= 3 for _, requests in recorder.batches)
    for key, requests in recorder.batches:
        assert all("ab"[r % 2] == key for r in requests)
    assert sorted(r for _, requests in recorder.batches for r in requests) == list(range(10))
    await batcher.aclose()


async def test_a_full_batch_starts_without_waiting_out_the_wait() -> None:
    recorder = _Recorder()
    batcher = _batcher(recorder, limit=2, wait_s=30.0)
    with anyio.fail_after(5):
        assert list(await asyncio.gather(batcher.submit("a", 1), batcher.submit("a", 2))) == ["a:1", "a:2"]
    await batcher.aclose()


async def test_a_lone_request_runs_once_the_wait_is_over() -> None:
    recorder = _Recorder()
    batcher = _batcher(recorder, wait_s=0.2)
    started = time.monotonic()
    with anyio.fail_after(5):
        assert await batcher.submit("a", 1) == "a:1"
    assert 0.15 <= time.monotonic() - started < 3.0
    await batcher.aclose()


async def test_a_failing_batch_fails_every_request_in_it() -> None:
    batcher = _batcher(_Recorder())
    with anyio.fail_after(10):
        results = await asyncio.gather(batcher.submit("boom", 1), batcher.submit("boom", 2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
    with anyio.fail_after(10):
        assert await batcher.submit("ok", 3) == "ok:3"  # the batcher survives a failed batch
    await batcher.aclose()


async def test_a_request_cancelled_while_queued_never_runs() -> None:
    recorder = _Recorder()
    recorder.gate.clear()  # hold the first batch so the second request stays queued
    batcher = _batcher(recorder, wait_s=0.0)
    first = asyncio.create_task(batcher.submit("a", 1))
    with anyio.fail_after(5):
        await anyio.to_thread.run_sync(recorder.started.wait, 5)
    queued = asyncio.create_task(batcher.submit("b", 2))
    await asyncio.sleep(0.05)
    queued.cancel()
    recorder.gate.set()
    with anyio.fail_after(5):
        assert await first == "a:1"
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await batcher.submit("c", 3) == "c:3"
    assert [key for key, _ in recorder.batches] == ["a", "c"]
    await batcher.aclose()


async def test_cancelling_every_request_of_a_running_batch_stops_its_work() -> None:
    recorder = _Recorder(steps=500, step_s=0.005)
    batcher = _batcher(recorder, wait_s=0.0)
    tasks = [asyncio.create_task(batcher.submit("a", i)) for i in range(2)]
    with anyio.fail_after(5):
        await anyio.to_thread.run_sync(recorder.started.wait, 5)
    tasks[0].cancel()
    await asyncio.sleep(0.05)
    assert recorder.stopped == 0  # one caller still waits: the batch goes on
    tasks[1].cancel()
    with anyio.fail_after(5):
        await asyncio.gather(*tasks, return_exceptions=True)
        await eventually(lambda: recorder.stopped > 0)
    assert recorder.stopped == 1
    assert recorder.steps_run < 250
    await batcher.aclose()


async def test_a_partly_cancelled_batch_still_answers_the_others() -> None:
    recorder = _Recorder(steps=20, step_s=0.005)
    batcher = _batcher(recorder, wait_s=0.02)
    leaving = asyncio.create_task(batcher.submit("a", 1))
    staying = asyncio.create_task(batcher.submit("a", 2))
    with anyio.fail_after(5):
        await anyio.to_thread.run_sync(recorder.started.wait, 5)
    leaving.cancel()
    with anyio.fail_after(5):
        assert await staying == "a:2"
    assert recorder.stopped == 0
    assert recorder.steps_run == 20
    await batcher.aclose()


def test_stop_check_raises_once_set() -> None:
    stop = Stop()
    stop.check()
    stop.set()
    with pytest.raises(BatchCancelled):
        stop.check()
