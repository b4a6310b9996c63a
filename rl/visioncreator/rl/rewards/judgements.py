"""Which images needed judging, which verdict each got, and whether it agrees with the ground truth.

This is the one binding of reflections to images that the reflection reward, the format reward
and per-turn credit all read, so that none of them can be paid by a reflection that judges
nothing.

**What needed judging.** With reflection on, each reflect turn judges the calls the policy's
image tools ran since the previous reflect turn (the calls written from that turn on, up to this
one), in batch order, failed calls included. Calls after the last reflect turn (a budget ended
the run first) needed judging too and got no verdict (``turn`` -1). With reflection off (the
record's ``config["reflect"]`` is false, or the record does not say and holds no reflect turn),
nothing needed judging.

**Binding.** Within a reflect turn, a reflection naming an image binds to the first call of the
turn's batch that made it and is not bound yet; one naming any other handle binds to nothing.
Then the unnamed reflections bind, in order, to the batch's calls still unbound, failed calls
included (a failed call has no image to name). A call left unbound got no verdict.

**Agreement** (``correct``). A verdict agrees when it flags (``redo`` or ``revise``) an image with
ground-truth faults, or accepts an image without. A missing verdict never agrees. One decision is
forced: when the image's plan step has no redo left (its calls so far exceed the run's
``max_redos_per_image``: the graph refuses another), an ``accept`` that lists faults is the
honest choice the budget leaves, and it is not scored (``correct`` None), neither paid nor
punished. Paying it would let a policy that spends a step's budget on purpose earn credit for
accepting with any fault text; a plain ``accept`` of a faulty image, which names no fault, stays
wrong. Images without ground truth and failed calls are not scored either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visioncreator.policy import Reflection
from visioncreator.rl.rewards.base import truth_of
from visioncreator.tool_servers import IMAGE_TOOLS

if TYPE_CHECKING:  # the graph package pulls in LangGraph; rewards only read the record
    from visioncreator.graph import ToolCallRecord, Trajectory, TurnRecord

__all__ = ["Binding", "Judgement", "bind", "judgements", "reflection_on", "rounds"]


@dataclass(frozen=True)
class Judgement:
    """One image (or failed image call) that a reflect turn had to judge, and how it was judged.

    Attributes:
        turn: Index of the reflect turn that had to judge it (``TurnRecord.index``); -1 if no
            reflect turn came.
        image: The handle judged (None for a failed call that made no image).
        call_id: The ``ToolCallRecord.id`` of the call that made it.
        verdict: ``accept``, ``redo`` or ``revise`` of the reflection bound to it; None when no
            reflection judged it.
        faulty: Ground truth: the image has faults (None: no ground truth, or no image).
        correct: The verdict agrees with the ground truth (a missing verdict counts False);
            None when not scorable (no ground truth, no image, or a forced accept).
    """

    turn: int
    image: str | None
    call_id: str | None
    verdict: str | None
    faulty: bool | None
    correct: bool | None


@dataclass(frozen=True)
class Binding:
    """How one reflect turn's reflections bound to the calls it had to judge.

    Attributes:
        verdicts: The reflection bound to each call, in batch order (None: unbound).
        dangling: Reflections that bound to no call (an unknown handle, a second verdict on one
            image, more unnamed reflections than unbound calls).
        unnamed_images: How many calls with an image were bound by an unnamed reflection.
    """

    verdicts: tuple[Reflection | None, ...]
    dangling: tuple[Reflection, ...]
    unnamed_images: int


def reflection_on(trajectory: Trajectory) -> bool:
    """Whether the run reflected: the recorded ``config["reflect"]``, else whether any reflect turn came."""
    flag = trajectory.config.get("reflect")
    if isinstance(flag, bool):
        return flag
    return any(t.node == "reflect" for t in trajectory.turns)


def rounds(trajectory: Trajectory) -> list[tuple[TurnRecord | None, list[ToolCallRecord]]]:
    """Each reflect turn with the policy's image calls it had to judge, in batch order.

    A last entry with turn None holds the calls no reflect turn came after. Empty when
    reflection is off.
    """
    if not reflection_on(trajectory):
        return []
    calls = [c for c in trajectory.tool_calls if c.by == "policy" and c.name in IMAGE_TOOLS]
    calls.sort(key=lambda c: c.batch)  # stable: within a batch, the record's order
    out: list[tuple[TurnRecord | None, list[ToolCallRecord]]] = []
    since = -1
    for turn in trajectory.turns:
        if turn.node == "reflect":
            out.append((turn, [c for c in calls if since <= c.turn < turn.index]))
            since = turn.index
    late = [c for c in calls if c.turn >= since]
    if late:
        out.append((None, late))
    return out


def bind(calls: Sequence[ToolCallRecord], reflections: Sequence[Reflection]) -> Binding:
    """Bind ``reflections`` to ``calls``: named ones to their image, then unnamed ones in order."""
    verdicts: list[Reflection | None] = [None] * len(calls)
    dangling: list[Reflection] = []
    unnamed: list[Reflection] = []
    for r in reflections:
        if r.image is None:
            unnamed.append(r)
            continue
        slot = next((i for i, c in enumerate(calls) if verdicts[i] is None and c.ok and c.handle == r.image), None)
        if slot is None:
            dangling.append(r)
        else:
            verdicts[slot] = r
    unnamed_images = 0
    free = iter([i for i, v in enumerate(verdicts) if v is None])
    for r in unnamed:
        slot = next(free, None)
        if slot is None:
            dangling.append(r)
            continue
        verdicts[slot] = r
        unnamed_images += bool(calls[slot].ok and calls[slot].handle)
    return Binding(verdicts=tuple(verdicts), dangling=tuple(dangling), unnamed_images=unnamed_images)


def _max_redos(trajectory: Trajectory) -> int:
    value = trajectory.config.get("max_redos_per_image")
    if isinstance(value, int):
        return value
    from visioncreator.graph import Budgets  # loaded already: a Trajectory is a graph type

    return Budgets().max_redos_per_image


def _forced(trajectory: Trajectory) -> set[str]:
    """Ids of the calls after which their plan step has no redo left (the graph refuses another)."""
    limit = _max_redos(trajectory)
    calls = sorted(
        (c for c in trajectory.tool_calls if c.by == "policy" and c.name in IMAGE_TOOLS and c.step is not None),
        key=lambda c: c.batch,
    )
    seen: dict[int, int] = {}
    forced: set[str] = set()
    for c in calls:
        assert c.step is not None
        seen[c.step] = seen.get(c.step, 0) + 1
        if seen[c.step] > limit:
            forced.add(c.id)
    return forced


def _agrees(verdict: Reflection | None, faulty: bool, forced: bool) -> bool | None:
    if verdict is None:
        return False
    flagged = verdict.verdict in ("redo", "revise")
    if not faulty:
        return not flagged
    if flagged:
        return True
    return None if forced and verdict.faults else False


def judgements(trajectory: Trajectory) -> list[Judgement]:
    """Every image (and failed image call) that needed judging, with its bound verdict and agreement.

    See the module docstring for what needed judging, how reflections bind and when a verdict
    agrees. Empty when reflection is off or the policy made no image call.
    """
    forced = _forced(trajectory)
    out: list[Judgement] = []
    for turn, calls in rounds(trajectory):
        reflections = [s.value for s in turn.segments if isinstance(s.value, Reflection)] if turn else []
        binding = bind(calls, reflections)
        for call, reflection in zip(calls, binding.verdicts, strict=True):
            image = call.handle if call.ok and call.handle else None
            truth = truth_of(trajectory.truths, image) if image else None
            faulty = None if truth is None else bool(truth.faults)
            correct = None if faulty is None else _agrees(reflection, faulty, call.id in forced)
            out.append(
                Judgement(
                    turn=turn.index if turn else -1,
                    image=image,
                    call_id=call.id,
                    verdict=reflection.verdict if reflection else None,
                    faulty=faulty,
                    correct=correct,
                )
            )
    return out
