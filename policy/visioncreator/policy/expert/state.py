"""What the scripted expert reads back from a conversation: plans, calls, images, verdicts.

The expert is stateless: like a model, it sees only the messages. This module rebuilds the
state it needs from them, and writes the plans it would make for a task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from visioncreator.policy.errors import MissingTaskError
from visioncreator.policy.format import parse_turn
from visioncreator.policy.prompting import Observation, parse_observations, parse_task
from visioncreator.policy.types import Message, Node, Plan, PlanStep, Reflection, Task, ToolCall

DEFAULT_SIZE = 512
MISSING_OBJECT = "missing object:"
"""How the critic's fault for an object the image lacks begins."""
# Phrases after which a request's last clause starts; a bad plan drops that clause.
_CLAUSE_MARKERS = (
    " with ",
    " and ",
    " next to ",
    " beside ",
    " below ",
    " above ",
    " under ",
    " on top of ",
    " on ",
    " left of ",
    " right of ",
    " behind ",
    " in front of ",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolRoles:
    """The tools the expert calls, by role: the environment it teaches in names them."""

    generate: str
    """Makes an image from a prompt."""
    edit: str
    """Changes an input image as an instruction says."""
    reference: str
    """Makes an image from a prompt that keeps the subjects of reference images."""
    inspect: str
    """Reports what an image holds (the observations the critic reads)."""


def stable_int(*parts: object) -> int:
    """A 63-bit integer from ``parts`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(repr(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def call_seed(*, base: int, task_key: int, step: int, attempt: int) -> int:
    """The seed of a step's call at an attempt: deterministic, different per attempt."""
    return stable_int("seed", base, task_key, step, attempt) % (2**31 - 1)


def panels(task: Task) -> list[str]:
    """The per-image requests of a multi task, or the whole request for every image."""
    _head, sep, tail = task.request.partition(":")
    parts = [p.strip() for p in tail.split(";")] if sep else []
    if len(parts) != task.n_images or not all(parts):
        return [task.request] * task.n_images
    return parts


def drop_last_clause(goal: str) -> str:
    """The goal without its last clause (what a careless planner would prompt), or the goal itself."""
    cut = max(goal.rfind(marker) for marker in _CLAUSE_MARKERS)
    return goal[:cut].strip() if cut > 0 else goal


def good_plan(task: Task, tools: ToolRoles) -> Plan:
    """The plan the expert makes when it plans well: prompts are the goals; later panels use references."""
    steps: list[PlanStep] = []
    if task.split == "multi" and task.n_images > 1:
        for i, text in enumerate(panels(task), start=1):
            tool = tools.generate if i == 1 else tools.reference
            deps = () if i == 1 else (1,)
            steps.append(PlanStep(step=i, goal=text, tool=tool, depends_on=deps, prompt=text))
    elif task.split == "img2img" and task.inputs:
        for i in range(1, task.n_images + 1):
            steps.append(PlanStep(step=i, goal=task.request, tool=tools.edit, prompt=task.request))
    else:
        for i in range(1, task.n_images + 1):
            steps.append(PlanStep(step=i, goal=task.request, tool=tools.generate, prompt=task.request))
    return Plan(steps=tuple(steps))


def bad_plan(task: Task, tools: ToolRoles) -> Plan:
    """A plausible but wrong plan: no references for multi, a truncated prompt otherwise."""
    plan = good_plan(task, tools)
    if task.split == "multi" and task.n_images > 1:
        steps = [s.model_copy(update={"tool": tools.generate, "depends_on": ()}) for s in plan.steps]
    else:
        steps = [s.model_copy(update={"prompt": drop_last_clause(s.goal)}) for s in plan.steps]
    return Plan(steps=tuple(steps))


def least_faulty(attempts: Sequence[tuple[str, Sequence[str]]]) -> str | None:
    """The handle of the least faulty attempt, or ``None`` when there is none.

    Least faulty: the fewest objects missing, then the fewest faults, then the latest. A missing
    object ranks first because it breaks everything the goal says about that object (its count,
    colour and place) in one fault, where any other fault breaks one thing.

    Args:
        attempts: ``(handle, faults its reflection listed)`` pairs, oldest first.

    """
    best: tuple[str, tuple[int, int]] | None = None
    for handle, faults in attempts:
        rank = (sum(f.startswith(MISSING_OBJECT) for f in faults), len(faults))
        if best is None or rank <= best[1]:
            best = (handle, rank)
    return best[0] if best is not None else None


def input_for_step(task: Task, step: int) -> str | None:
    """The input image an edit step works on: input ``step - 1``, or the first input."""
    if not task.inputs:
        return None
    return task.inputs[step - 1] if step - 1 < len(task.inputs) else task.inputs[0]


def handle_of(obs: Observation) -> str | None:
    """The image handle an observation produced, if any."""
    if obs.ok and obs.result and isinstance(obs.result.get("handle"), str):
        return str(obs.result["handle"])
    return None


@dataclass
class History:
    """The state the expert rebuilds from a conversation."""

    task: Task
    tools: ToolRoles
    seed: int = 0
    """The run's seed (``PolicyRequest.seed``): tool seeds derive from it."""
    n_assistant: int = 0
    plans: list[Plan] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    # Generation observations with their resolved plan step, in order.
    observations: list[tuple[int | None, Observation]] = field(default_factory=list)
    last_tool: list[tuple[int | None, Observation]] = field(default_factory=list)
    reflections: dict[str, Reflection] = field(default_factory=dict)
    inspections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        """The effective plan: every step as the newest plan that mentions it says."""
        if not self.plans:
            return good_plan(self.task, self.tools)
        merged: dict[int, PlanStep] = {}
        for plan in self.plans:
            for s in plan.steps:
                merged[s.step] = s
        return Plan(steps=tuple(merged[k] for k in sorted(merged)))

    def step_observations(self, step: int) -> list[Observation]:
        """The observations of a step's calls, oldest first."""
        return [o for s, o in self.observations if s == step]

    def redos(self, step: int) -> int:
        """How many times the step was called again after its first call."""
        return max(0, len(self.step_observations(step)) - 1)

    def accepted(self, step: int) -> str | None:
        """The step's image if the latest reflection on its latest image is ``accept``."""
        obs = self.step_observations(step)
        handle = handle_of(obs[-1]) if obs else None
        if handle is not None and (r := self.reflections.get(handle)) is not None and r.verdict == "accept":
            return handle
        return None

    def latest_image(self, step: int) -> str | None:
        """The step's newest image, accepted or not."""
        for obs in reversed(self.step_observations(step)):
            if (handle := handle_of(obs)) is not None:
                return handle
        return None

    def attempts(self, step: int) -> list[tuple[str, tuple[str, ...]]]:
        """The step's reflected images with the faults their reflection listed, oldest first."""
        found: list[tuple[str, tuple[str, ...]]] = []
        for obs in self.step_observations(step):
            handle = handle_of(obs)
            if handle is not None and (r := self.reflections.get(handle)) is not None:
                found.append((handle, r.faults))
        return found

    def exhausted(self, step: int, max_redos: int) -> bool:
        """True when the step's latest call failed and it has no redos left."""
        obs = self.step_observations(step)
        return bool(obs) and not obs[-1].ok and self.redos(step) >= max_redos


def _resolve_step(obs: Observation, calls: Sequence[ToolCall]) -> int | None:
    if obs.step is not None:
        return obs.step
    # The graph may drop the step: find the call it ran by its name and seed, which are unique here.
    for call in reversed(calls):
        if call.name == obs.name and call.arguments.get("seed") == obs.arguments.get("seed"):
            return call.step
    return None


def read_history(messages: Sequence[Message], tools: ToolRoles, node: Node | None = None) -> History:
    """Rebuild the expert's state from the messages (``tools`` names what the expert calls).

    ``node`` is the node asking now: when it is not ``reflect`` right after a tool message,
    the loop has reflection switched off and those images count as accepted.

    Raises:
        MissingTaskError: No message states the task.

    """
    task = parse_task(messages)
    if task is None:
        raise MissingTaskError("the conversation holds no <task> message")
    history = History(task=task, tools=tools)
    unreviewed: list[str] = []
    for message in messages:
        if message.role == "assistant":
            history.n_assistant += 1
            if message.node is not None and message.node != "reflect":
                # No reflect turn followed the images: the loop runs with reflection off,
                # and images are accepted as they come.
                for seen_handle in unreviewed:
                    history.reflections.setdefault(seen_handle, Reflection(verdict="accept", image=seen_handle))
            unreviewed = []
            parsed = parse_turn(message.content)
            if (plan := parsed.plan) is not None:
                history.plans.append(plan)
            history.calls.extend(parsed.tool_calls)
            for r in parsed.reflections:
                if r.image is not None:
                    history.reflections[r.image] = r
        elif message.role == "tool":
            batch: list[tuple[int | None, Observation]] = []
            for obs in parse_observations(message):
                if obs.name == tools.inspect:
                    seen = obs.inspection or obs.result
                    handle = (obs.result or {}).get("handle") or obs.arguments.get("image")
                    if seen is not None and isinstance(handle, str):
                        history.inspections[handle] = dict(seen)
                    continue
                step = _resolve_step(obs, history.calls)
                handle = handle_of(obs)
                if handle is not None and obs.inspection is not None:
                    history.inspections[handle] = dict(obs.inspection)
                batch.append((step, obs))
            history.observations.extend(batch)
            history.last_tool = batch
            unreviewed = [h for _, o in batch if (h := handle_of(o)) is not None]
    if node is not None and node != "reflect":
        for seen_handle in unreviewed:
            history.reflections.setdefault(seen_handle, Reflection(verdict="accept", image=seen_handle))
    return history
