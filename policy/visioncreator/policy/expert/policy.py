"""The scripted ``expert`` policy: a teacher for the synthetic environment.

It is stateless: every turn is rebuilt from the request's messages (the task, its own earlier
turns, the tool observations), as a model would, and written in exactly the canonical format,
so its trajectories are SFT data. A :class:`Critic` (provided by the environment) judges images
from their inspections. It can be told to make mistakes at set rates, so that reflection and
plan rewards have failures to learn from.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from visioncreator.policy.expert.state import (
    DEFAULT_SIZE,
    History,
    ToolRoles,
    bad_plan,
    call_seed,
    good_plan,
    handle_of,
    input_for_step,
    least_faulty,
    read_history,
    stable_int,
)
from visioncreator.policy.format import (
    parse_turn,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
    write_turn,
)
from visioncreator.policy.prompting import Observation
from visioncreator.policy.types import (
    Answer,
    Plan,
    PlanStep,
    PolicyRequest,
    PolicyTurn,
    Reflection,
    ToolCall,
    Verdict,
)

__all__ = ["Critic", "ExpertConfig", "ExpertPolicy", "ToolRoles"]

# Faults an over-eager reflector invents for a good image: plausible, never checkable.
_MADE_UP_FAULTS = (
    "the main subject looks slightly off-centre",
    "the colours look washed out",
    "the edges of the subject look smeared",
    "the lighting looks inconsistent",
)


class Critic(Protocol):
    """Judges one image from its inspection; the synthetic environment provides one."""

    def __call__(
        self,
        *,
        goal: str,
        tool: str,
        inspection: Mapping[str, Any],
        references: Sequence[Mapping[str, Any]] = (),
        source: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The faults of the image against ``goal`` (empty when the image is good).

        A fault about an object the image lacks begins with ``"missing object:"``: the expert
        ranks those first when it picks a step's least faulty attempt.

        Args:
            goal: What the image must satisfy, in words.
            tool: The tool that made the image.
            inspection: What ``inspect_image`` saw in the image.
            references: Inspections of the images its subjects must look like.
            source: Inspection of the image an edit started from.

        """
        ...


@dataclass(frozen=True, kw_only=True)
class ExpertConfig:
    """How the expert behaves, and how often it errs."""

    seed: int = 0
    """Base of every random draw and tool seed; with the request seed, makes turns reproducible."""
    max_redos: int = 3
    """Redos (and revisions) per plan step before the expert accepts what it has."""
    skip_reflection_rate: float = 0.0
    """Probability, per image, of accepting it without looking (no faults listed)."""
    accept_faulty_rate: float = 0.0
    """Probability, per faulty image, of accepting it anyway (the faults are still listed)."""
    bad_plan_rate: float = 0.0
    """Probability of a first plan that is wrong: no references for multi, a truncated prompt otherwise."""
    over_reflect_rate: float = 0.0
    """Probability, per good image, of redoing it over a made-up fault."""
    think: bool = True
    """Whether plan turns open with a ``<think>`` sentence."""


@dataclass
class _Draws:
    skip: float
    accept_faulty: float
    over_reflect: float


class ExpertPolicy:
    """A scripted teacher for the synthetic environment (see the module docstring).

    Args:
        critic: Judges images from their inspections.
        tools: The tool names it calls, by role.
        config: Behaviour and error rates.

    """

    name = "expert"

    def __init__(self, critic: Critic, tools: ToolRoles, config: ExpertConfig | None = None) -> None:
        self.critic = critic
        self.tools = tools
        self.config = config or ExpertConfig()

    async def respond(self, request: PolicyRequest) -> PolicyTurn:
        """Write the turn the node asks for.

        Raises:
            MissingTaskError: No message states the task.

        """
        started = time.perf_counter()
        text = self.write(request)
        return PolicyTurn(text=text, parsed=parse_turn(text), model="expert", latency_s=time.perf_counter() - started)

    def write(self, request: PolicyRequest) -> str:
        """The turn's text (the synchronous core of :meth:`respond`)."""
        history = read_history(request.messages, self.tools, request.node)
        history.seed = request.seed or 0
        task_json = history.task.model_dump_json(exclude={"id"})
        rng = random.Random(stable_int("turn", self.config.seed, request.seed, history.n_assistant, task_json))
        if request.node == "plan":
            return self._plan(history, rng)
        if request.node == "act":
            return self._act(history)
        if request.node == "reflect":
            return self._reflect(history, rng)
        return write_turn(write_answer(self._answer(history)))

    # plan

    def _plan(self, history: History, rng: random.Random) -> str:
        good = good_plan(history.task, self.tools)
        if history.plans:
            # Asked to plan again (after a revise): fix the steps that are not done yet.
            remaining = tuple(s for s in good.steps if history.accepted(s.step) is None)
            plan = Plan(steps=remaining or good.steps)
            think = "I revise the plan for the steps not done yet: prompts state the whole goal."
        else:
            plan = bad_plan(history.task, self.tools) if rng.random() < self.config.bad_plan_rate else good
            think = _describe(history, plan)
        parts = [write_think(think)] if self.config.think else []
        return write_turn(*parts, write_plan(plan))

    # act

    def _act(self, history: History) -> str:
        plan = history.plan
        known = {s.step for s in plan.steps}
        pending = [
            s
            for s in plan.steps
            if history.accepted(s.step) is None and not history.exhausted(s.step, self.config.max_redos)
        ]
        calls: list[ToolCall] = []
        for step in pending:
            deps = [self._usable(history, d) for d in step.depends_on if d in known]
            if all(h is not None for h in deps):
                attempt = len(history.step_observations(step.step))
                calls.append(self._call(history, step, attempt, [h for h in deps if h is not None]))
        if not calls:
            return write_turn(write_answer(self._answer(history)))
        return write_turn(*(write_tool_call(c) for c in calls))

    def _usable(self, history: History, step: int) -> str | None:
        if history.accepted(step) is None and not history.exhausted(step, self.config.max_redos):
            return None
        return self._kept(history, step) or history.latest_image(step)

    def _kept(self, history: History, step: int) -> str | None:
        """The image a step keeps: the one it accepted, or its least faulty once its redos are spent.

        An image accepted only because no redo was left is no better than the step's earlier
        attempts: a careful agent keeps whichever its reflections found least faulty (see
        :func:`least_faulty`), and builds on that one.
        """
        if history.redos(step) < self.config.max_redos:
            return history.accepted(step)
        return least_faulty(history.attempts(step))

    def _call(self, history: History, step: PlanStep, attempt: int, references: list[str]) -> ToolCall:
        task = history.task
        text = step.prompt or step.goal
        seed = call_seed(base=self.config.seed, task_key=_task_key(history), step=step.step, attempt=attempt)
        source = input_for_step(task, step.step)
        tools = self.tools
        if step.tool == tools.edit and source is not None:
            return ToolCall(
                name=tools.edit, arguments={"image": source, "instruction": text, "seed": seed}, step=step.step
            )
        arguments: dict[str, Any] = {"prompt": text, "width": DEFAULT_SIZE, "height": DEFAULT_SIZE, "seed": seed}
        if step.tool == tools.reference and references:
            return ToolCall(name=tools.reference, arguments={**arguments, "references": references[:4]}, step=step.step)
        return ToolCall(name=tools.generate, arguments=arguments, step=step.step)

    # reflect

    def _reflect(self, history: History, rng: random.Random) -> str:
        cfg = self.config
        steps = {s.step: s for s in history.plan.steps}
        accepted = {n: self._kept(history, n) if history.accepted(n) else None for n in steps}
        reflects: list[str] = []
        redo_calls: list[ToolCall] = []
        revised: list[int] = []
        notes: list[str] = []
        for step_no, obs in history.last_tool:
            step = steps.get(step_no) if step_no is not None else None
            handle = handle_of(obs)
            budget_left = step is not None and history.redos(step.step) < cfg.max_redos
            if step is None or not obs.ok:
                if step is None or not budget_left:
                    if handle is not None:
                        reflects.append(write_reflect(Reflection(verdict="accept", image=handle)))
                    elif step is not None:
                        notes.append(f"Step {step.step} keeps failing and has no redos left.")
                    continue
                fault = f"tool error: {obs.error or 'the call failed'}"[:300]
                failures = sum(1 for o in history.step_observations(step.step) if not o.ok)
                verdict: Verdict = "redo" if failures == 1 else "revise"
                reflects.append(write_reflect(Reflection(verdict=verdict, faults=(fault,))))
                if verdict == "redo":
                    redo_calls.append(self._redo(history, step, obs, clamp=True))
                else:
                    revised.append(step.step)
                continue
            if handle is None:
                continue
            draws = _Draws(rng.random(), rng.random(), rng.random())
            verdict, faults = self._judge(history, step, obs, accepted, draws, budget_left)
            if verdict == "redo" and not faults:
                faults = [rng.choice(_MADE_UP_FAULTS)]
            reflects.append(write_reflect(Reflection(verdict=verdict, faults=tuple(faults), image=handle)))
            if verdict == "accept":
                kept = [*history.attempts(step.step), (handle, tuple(faults))] if not budget_left else []
                accepted[step.step] = least_faulty(kept) or handle
            elif verdict == "redo":
                redo_calls.append(self._redo(history, step, obs, clamp=False))
            else:
                revised.append(step.step)
        parts = reflects
        if revised:
            fixed = tuple(s for s in good_plan(history.task, self.tools).steps if accepted.get(s.step) is None)
            parts.append(write_plan(fixed))
            for s in fixed:
                deps = [accepted.get(d) for d in s.depends_on]
                if s.step in revised and all(h is not None for h in deps):
                    attempt = len(history.step_observations(s.step))
                    parts.append(write_tool_call(self._call(history, s, attempt, [h for h in deps if h])))
        parts.extend(write_tool_call(c) for c in redo_calls)
        if not parts:
            parts = [write_think(" ".join(notes) or "There is no new image to reflect on.")]
        return write_turn(*parts)

    def _judge(
        self,
        history: History,
        step: PlanStep,
        obs: Observation,
        accepted: Mapping[int, str | None],
        draws: _Draws,
        budget_left: bool,
    ) -> tuple[Verdict, list[str]]:
        cfg = self.config
        inspection = obs.inspection
        if inspection is None or draws.skip < cfg.skip_reflection_rate:
            return "accept", []
        refs, from_call = self._references(history, step, obs, accepted)
        source_handle = obs.arguments.get("image")
        source = history.inspections.get(source_handle) if isinstance(source_handle, str) else None

        def check(goal: str, references: Sequence[Mapping[str, Any]]) -> list[str]:
            return list(
                self.critic(goal=goal, tool=obs.name, inspection=inspection, references=references, source=source)
            )

        faults = check(step.goal, refs)
        if not faults:
            if budget_left and draws.over_reflect < cfg.over_reflect_rate:
                return "redo", []
            return "accept", []
        if not budget_left or draws.accept_faulty < cfg.accept_faulty_rate:
            return "accept", faults
        # Faults the step's own prompt also shows mean the tool failed (redo); faults only the goal
        # shows mean the prompt was wrong, and a subject that drifted without references means the
        # tool choice was wrong: both need a new plan.
        drift = bool(refs) and not from_call and bool(set(faults) - set(check(step.goal, ())))
        if drift or not set(faults) <= set(check(step.prompt or step.goal, refs)):
            return "revise", faults
        return "redo", faults

    def _references(
        self, history: History, step: PlanStep, obs: Observation, accepted: Mapping[int, str | None]
    ) -> tuple[list[Mapping[str, Any]], bool]:
        """Inspections the image must agree with, and whether the call itself passed them."""
        called = obs.arguments.get("references")
        handles = [h for h in called if isinstance(h, str)] if isinstance(called, list) else []
        from_call = bool(handles)
        if not handles and history.task.split == "multi":
            first = min(accepted) if accepted else None
            if first is not None and first != step.step:
                anchor = accepted.get(first) or history.latest_image(first)
                handles = [anchor] if anchor else []
        return [history.inspections[h] for h in handles if h in history.inspections], from_call

    def _redo(self, history: History, step: PlanStep, obs: Observation, *, clamp: bool) -> ToolCall:
        arguments = dict(obs.arguments)
        attempt = len(history.step_observations(step.step))
        arguments["seed"] = call_seed(
            base=self.config.seed, task_key=_task_key(history), step=step.step, attempt=attempt
        )
        if clamp:
            for key in ("width", "height"):
                if isinstance(arguments.get(key), int) and arguments[key] > DEFAULT_SIZE:
                    arguments[key] = DEFAULT_SIZE
        return ToolCall(name=obs.name, arguments=arguments, step=step.step)

    # finish

    def _answer(self, history: History) -> Answer:
        images: list[str] = []
        for s in history.plan.steps:
            handle = self._kept(history, s.step) or history.latest_image(s.step)
            if handle is not None:
                images.append(handle)
        if not images:
            every = [h for _, o in history.observations if (h := handle_of(o)) is not None]
            images = every[-1:]
        return Answer(images=tuple(images))


def _task_key(history: History) -> int:
    return stable_int("task", history.task.model_dump_json(exclude={"id"}), history.seed)


def _describe(history: History, plan: Plan) -> str:
    task = history.task
    tools = ", ".join(
        f"step {s.step} {s.tool}" + (f" on step {', '.join(map(str, s.depends_on))}" if s.depends_on else "")
        for s in plan.steps
    )
    return f"The task wants {task.n_images} image(s) ({task.split}); I plan {tools}."
