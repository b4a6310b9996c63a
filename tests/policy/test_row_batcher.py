"""The row batcher's wait: conversations in flight wait for each other; a lone one does not wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from visioncreator.policy.local.batcher import RowBatcher


def batcher(wait_s: float) -> RowBatcher[int, int]:
    def run(jobs: Sequence[int]) -> list[int]:
        time.sleep(0.05)  # a batch takes a while: late turns queue meanwhile
        return [j * 10 for j in jobs]

    return RowBatcher(run, rows=lambda _: 1, limit=8, wait_s=wait_s, cancelled=lambda _: False, solo=lambda _: False)


def test_a_lone_conversation_does_not_wait_for_companions_after_its_first_turn() -> None:
    b = batcher(wait_s=1.0)
    assert b.submit(1) == 10  # the first batch waits (nobody knows how many will come)
    started = time.monotonic()
    for turn in range(2, 6):
        assert b.submit(turn) == turn * 10
    assert time.monotonic() - started < 1.0  # four more turns of 0.05 s: none of them waited 1 s
    assert b.batches == [1, 1, 1, 1, 1]


def test_conversations_in_flight_wait_for_each_other_even_when_they_come_back_apart() -> None:
    b = batcher(wait_s=2.0)
    results: dict[int, int] = {}

    def conversation(k: int) -> None:
        results[k] = b.submit(k)
        time.sleep(0.1 * k)  # each spends a different time on its tools before its next turn
        results[k + 100] = b.submit(k + 100)

    threads = [threading.Thread(target=conversation, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: k * 10 for k in [0, 1, 2, 3, 100, 101, 102, 103]}
    assert b.batches == [4, 4]  # the second turns, 0.3 s apart, still make one batch
