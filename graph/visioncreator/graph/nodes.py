"""The graph's nodes: start, plan, act, tools (each call with its look), reflect.

Each policy node asks the policy for one turn, records it, and decides where to go next by
writing ``pending`` tool calls, a plan, or an answer. Routing lives in ``builder.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from langgraph.func import task

from visioncreator.graph.bounds import bounded_feedback, bounded_turn
from visioncreator.graph.client import ToolClient, ToolOutcome
from visioncreator.graph.config import AgentConfig
from visioncreator.graph.errors import PolicyTurnTimeout
from visioncreator.graph.events import emit, settle
from visioncreator.graph.observations import new_observations
from visioncreator.graph.seeds import call_seed, default_call_seed_base
from visioncreator.graph.state import (
    AgentState,
    Look,
    PendingCall,
    ToolTask,
    running_s,
    typed,
    typed_list,
)
from visioncreator.graph.streaming import respond
from visioncreator.graph.trajectory import ToolCallRecord, TurnRecord
from visioncreator.policy import (
    FormatError,
    Message,
    Node,
    ParsedTurn,
    Policy,
    PolicyRequest,
    PolicyTurn,
    Task,
    ToolCall,
    error_message,
    system_message,
    task_message,
)
from visioncreator.tool_servers import IMAGE_TOOLS, ToolName

__all__ = ["Nodes", "emit"]


@dataclass(frozen=True, slots=True)
class Nodes:
    """The node functions, bound to a policy, a tool client and a configuration."""

    policy: Policy
    tools: ToolClient
    config: AgentConfig

    # ---- start ---------------------------------------------------------------------------

    async def start(self, state: AgentState) -> dict[str, Any]:
        """Validate the task once, write the system and task messages; queue looks at the input images."""
        task = typed(Task, state["task"])
        budgets = self.config.budgets.as_dict()
        if not self.config.reflect:
            budgets = {**budgets, "reflection": 0}
        messages = [system_message(self.tools.policy_tools(), budgets), task_message(task)]
        emit("start", request=task.request, n_images=task.n_images, split=task.split)
        seed = int(state.get("seed") or 0)
        base = state["call_seed_base"] if "call_seed_base" in state else default_call_seed_base(task, seed)
        return {
            "task": task,
            "call_seed_base": int(base),
            "messages": messages,
            "started_at": time.time(),
            "batch": 0,
            "shown_batch": -1 if task.inputs and self._inspects else 0,
            "step_calls": {},
            "policy_tool_calls": 0,
            "format_retries": 0,
            "answer": None,
            "termination": None,
            "plan": None,
            "pending": [],
        }

    @property
    def _inspects(self) -> bool:
        return self.config.observe in ("inspect", "both")

    # ---- policy nodes --------------------------------------------------------------------

    async def plan(self, state: AgentState) -> dict[str, Any]:
        """Ask the policy for a plan; the first plan turn of a task also opens it (see :meth:`start`)."""
        if state.get("messages"):
            return await self._policy_node("plan", state)
        # No input images to look at first: opening the task needs no step of its own.
        opening = await self.start(state)
        update = await self._policy_node("plan", {**state, **opening})  # type: ignore[typeddict-item]
        return {**opening, **update, "messages": [*opening["messages"], *update.get("messages", ())]}

    async def act(self, state: AgentState) -> dict[str, Any]:
        """Ask the policy for the next tool calls (or its answer)."""
        return await self._policy_node("act", state)

    async def reflect(self, state: AgentState) -> dict[str, Any]:
        """Ask the policy to judge the new images: accept, redo or revise."""
        return await self._policy_node("reflect", state)

    async def _ask(self, node: Node, messages: tuple[Message, ...], seed: int) -> PolicyTurn:
        request = PolicyRequest(messages=messages, node=node, tools=self.tools.policy_tools(), seed=seed)
        timeout = self.config.policy_timeout_s
        try:
            # Streamed token by token only while someone listens (stream_mode="messages").
            return await asyncio.wait_for(respond(self.policy, request), timeout=timeout)
        except TimeoutError as exc:
            raise PolicyTurnTimeout(f"the policy's {node} turn took longer than {timeout:g} s") from exc

    async def _policy_node(self, node: Node, state: AgentState) -> dict[str, Any]:
        since = time.perf_counter()
        stop = self.budget_stop(state, since)
        if stop:
            return self.closed(state, {"termination": stop, "pending": []}, since)
        new_messages, record, turn = await self.turn(node, state)
        return self.closed(state, self.take(node, state, record, turn, new_messages), since)

    def closed(self, state: AgentState, update: dict[str, Any], since: float) -> dict[str, Any]:
        """``update`` with the step's running time (since ``since``); a turn that ends the run settles the answer."""
        if update.get("termination") or update.get("answer") is not None:
            # The run ends here: settle the answer in this step rather than in a step of its own.
            update.update(settle({**state, **update}))  # type: ignore[typeddict-item]
        update["run_s"] = time.perf_counter() - since
        return update

    async def turn(self, node: Node, state: AgentState) -> tuple[list[Message], TurnRecord, PolicyTurn]:
        """Ask the policy for one turn: the observations it was shown first, the turn's record, the turn."""
        new_messages = self.flush_observations(state)
        messages = (*typed_list(Message, state.get("messages", ())), *new_messages)
        started = time.time()
        # Bounded before anything is recorded: the state, its checkpoints and the next request stay small and serialize.
        turn = bounded_turn(await self._ask(node, messages, int(state.get("seed") or 0)), self.config)
        index = len(state.get("turns", ()))
        record = TurnRecord.of(turn, index=index, node=node, started_at=started, n_messages=len(messages))
        return new_messages, record, turn

    def take(
        self, node: Node, state: AgentState, record: TurnRecord, turn: PolicyTurn, new_messages: list[Message]
    ) -> dict[str, Any]:
        """The state update of a turn: its ``record``, and what ``turn`` decides.

        ``turn`` is the policy's turn, or the turn as a person reviewed it: it goes into the conversation and
        decides the calls, the plan and the answer.
        """
        turn_index = record.index
        update: dict[str, Any] = {"turns": [record], "pending": []}
        out_messages = [*new_messages, Message(role="assistant", content=turn.text, node=node)]
        if new_messages:
            update["shown_batch"] = state.get("batch", 0)
        parsed = turn.parsed
        emit("turn", node=node, index=turn_index, errors=len(parsed.errors), text=turn.text)
        feedback: list[FormatError | str] = list(parsed.errors)
        if parsed.plan is not None:
            update["plan"] = parsed.plan
        for reflection in parsed.reflections:
            emit("reflect", verdict=reflection.verdict, image=reflection.image, faults=list(reflection.faults))
        calls, refused, step_calls = self._admit_calls(state, parsed, turn_index)
        feedback.extend(refused)
        update["step_calls"] = step_calls
        if calls:
            update["pending"] = calls
            update["batch"] = state.get("batch", 0) + 1
            update["policy_tool_calls"] = state.get("policy_tool_calls", 0) + len(calls)
        if parsed.answer is not None:
            update["answer"] = list(parsed.answer.images)
        useful = bool(calls) or parsed.answer is not None or (node == "plan" and parsed.plan is not None)
        useful = useful or (node == "reflect" and bool(parsed.reflections))
        if not useful and not feedback:
            feedback.append(_nothing_to_do(node))
        if feedback:
            out_messages.append(error_message(node, bounded_feedback(feedback, self.config.max_turn_errors)))
        retries = 0 if useful else state.get("format_retries", 0) + 1
        update["format_retries"] = retries
        if retries > self.config.max_format_retries:
            update["termination"] = "format_errors"
        update["messages"] = out_messages
        return update

    def _admit_calls(
        self, state: AgentState, parsed: ParsedTurn, turn_index: int
    ) -> tuple[list[PendingCall], list[str], dict[str, int]]:
        """Give each tool call an id; refuse those over a budget, with a reason the policy reads.

        A plan step's first call is its attempt; every later call for the same step is a redo,
        whichever node asked for it. Every admitted image call carries a seed (see
        :mod:`visioncreator.graph.seeds`): the policy's, or one derived from the run's seed base, the
        step and the attempt.
        """
        budgets = self.config.budgets
        used = state.get("policy_tool_calls", 0)
        step_calls = dict(state.get("step_calls", {}))
        admitted: list[PendingCall] = []
        refused: list[str] = []
        names = {t.name for t in self.tools.policy_tools()}
        for k, call in enumerate(parsed.tool_calls):
            if call.name not in names:
                refused.append(f"unknown tool {call.name!r}; available: {', '.join(sorted(names))}")
                continue
            if used + len(admitted) >= budgets.max_tool_calls:
                refused.append(f"tool-call budget of {budgets.max_tool_calls} is spent: give your answer")
                continue
            if call.step is not None and call.name in IMAGE_TOOLS:
                key = str(call.step)
                if step_calls.get(key, 0) > budgets.max_redos_per_image:
                    refused.append(
                        f"redo budget of {budgets.max_redos_per_image} for step {call.step} is spent: "
                        "accept the best image or revise the plan"
                    )
                    continue
                step_calls[key] = step_calls.get(key, 0) + 1
            if call.name in IMAGE_TOOLS:
                call = self._seeded(state, call, step_calls, used + len(admitted))
            named = call if call.id else call.model_copy(update={"id": f"call_{turn_index}_{k}"})
            admitted.append(PendingCall(call=named, turn=turn_index))
        return admitted, refused, step_calls

    def _seeded(self, state: AgentState, call: ToolCall, step_calls: dict[str, int], index: int) -> ToolCall:
        """The call with the seed it runs with: the policy's, or derived (step, attempt) from the run's base."""
        if self.config.call_seeds == "policy" and isinstance(call.arguments.get("seed"), int):
            return call
        if call.step is not None:
            step: int | str = call.step
            attempt = step_calls[str(call.step)] - 1
        else:  # a call for no plan step is its own key: the run's n-th policy call
            step, attempt = f"call-{index}", 0
        seed = call_seed(int(state.get("call_seed_base", 0)), step, attempt)
        return call.model_copy(update={"arguments": {**call.arguments, "seed": seed}})

    def budget_stop(self, state: AgentState, since: float) -> str | None:
        """The budget a turn asked for now would overrun (``since``: this step's start), else ``None``."""
        budgets = self.config.budgets
        if state.get("termination"):
            return state["termination"]
        if len(state.get("turns", ())) >= budgets.max_turns:
            return "budget_turns"
        if running_s(state, since) > budgets.wall_time_s:
            return "budget_wall_time"
        return None

    def flush_observations(self, state: AgentState) -> list[Message]:
        """The tool message for the latest batch, if the policy has not seen it yet."""
        return new_observations(state, self.config.observe)

    # ---- tools ---------------------------------------------------------------------------

    async def run_tool(self, payload: ToolTask, *, blocking: bool = False) -> dict[str, Any]:
        """Run one tool call and look at its image (see :meth:`_run_tool`); with the task's running time."""
        since = time.perf_counter()
        update = await self._run_tool(payload, blocking=blocking)
        update["batch_s"] = {str(payload["batch"]): time.perf_counter() - since}
        return update

    async def _run_tool(self, payload: ToolTask, *, blocking: bool) -> dict[str, Any]:
        """Run one tool call (fanned out with ``Send``: one task per call), then look at its image.

        The look runs in the call's own task, so a batch is one graph step. Our tool server looks
        in the call itself (one round trip; this task's write saves both). Another server gets a
        separate ``inspect_image``: the call then runs as a LangGraph task inside this one
        (:func:`_tool_call_task`), its record saved the moment it returns, so a crash during the
        look re-runs the look, never the call (``blocking``: its sync form, for sync runs).
        """
        pending = typed(PendingCall, payload["call"])
        batch = payload["batch"]
        if not (self._looks and pending.call.name in IMAGE_TOOLS):
            return {"tool_calls": [await self.call_policy_tool(pending, batch)]}
        if self.tools.looks_in_call:
            record, seen = await self._call_looking(pending, batch)
            if seen is not None and record.handle:
                looked = self._look_record(record.handle, batch, seen)
                return {"tool_calls": [record, looked], "inspections": {record.handle: seen}}
        elif blocking:
            record = await asyncio.wrap_future(_tool_call_task_blocking(self, pending, batch))
        else:
            record = await _tool_call_task(self, pending, batch)
        if not (record.ok and record.handle):
            return {"tool_calls": [record]}
        look = await self.inspect(Look(handle=record.handle, batch=batch))
        return {"tool_calls": [record, *look["tool_calls"]], "inspections": look["inspections"]}

    async def _call_looking(self, pending: PendingCall, batch: int) -> tuple[ToolCallRecord, dict[str, Any] | None]:
        """An image call that brings its new image's inspection along (``None`` when none came)."""
        call = pending.call
        record, outcome = await self._call_for(
            call.name, call.arguments, call_id=call.id, step=call.step, by="policy", batch=batch, turn=pending.turn,
            look=True,
        )  # fmt: skip
        return record, outcome.inspection

    def _look_record(self, handle: str, batch: int, seen: dict[str, Any]) -> ToolCallRecord:
        """The graph's look at a new image, as the record a separate ``inspect_image`` call would leave.

        Its latency is the server's time for the look (it rode on the image call's round trip).
        """
        call_id = f"inspect_{handle}_{batch}"
        started = time.time()
        spent = seen.get("generator_s")
        latency = float(spent) if isinstance(spent, int | float) else 0.0
        emit("tool_start", id=call_id, name=str(ToolName.INSPECT_IMAGE), by="graph")
        emit("tool_end", id=call_id, name=str(ToolName.INSPECT_IMAGE), ok=True, handle=handle, error=None,
             latency_s=latency)  # fmt: skip
        return ToolCallRecord(
            id=call_id, batch=batch, turn=-1, by="graph", name=str(ToolName.INSPECT_IMAGE),
            arguments={"image": handle}, step=None, ok=True, result=seen, error=None, handle=handle,
            latency_s=latency, started_at=started,
        )  # fmt: skip

    @property
    def _looks(self) -> bool:
        """Whether the graph looks at each new image before the reflect turn."""
        return self.config.reflect and self._inspects

    async def call_policy_tool(self, pending: PendingCall, batch: int) -> ToolCallRecord:
        """Run one admitted policy call and record it."""
        call = pending.call
        record, _ = await self._call_for(
            call.name, call.arguments, call_id=call.id, step=call.step, by="policy", batch=batch, turn=pending.turn,
            look=False,
        )  # fmt: skip
        return record

    async def inspect(self, payload: Look) -> dict[str, Any]:
        """Look at one image with ``inspect_image`` on the policy's behalf."""
        since = time.perf_counter()
        handle = payload["handle"]
        record, _ = await self._call_for(
            ToolName.INSPECT_IMAGE, {"image": handle}, call_id=f"inspect_{handle}_{payload['batch']}", step=None,
            by="graph", batch=payload["batch"], turn=-1, look=False,
        )  # fmt: skip
        value = record.result if record.ok else {"error": record.error}
        ran = {str(payload["batch"]): time.perf_counter() - since}
        return {"tool_calls": [record], "inspections": {handle: value}, "batch_s": ran}

    async def _call_for(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        call_id: str,
        step: int | None,
        by: str,
        batch: int,
        turn: int,
        look: bool,
    ) -> tuple[ToolCallRecord, ToolOutcome]:
        """Make one call and record it; the outcome too (with the inspection a ``look`` brought)."""
        emit("tool_start", id=call_id, name=str(name), by=by)
        started = time.time()
        outcome = await self.tools.call(name, arguments, look=True) if look else await self.tools.call(name, arguments)
        handle = None
        if outcome.ok and outcome.structured and (name in IMAGE_TOOLS or name == ToolName.INSPECT_IMAGE):
            handle = str(outcome.structured.get("handle"))
        emit(
            "tool_end", id=call_id, name=str(name), ok=outcome.ok, handle=handle, error=outcome.error,
            latency_s=outcome.latency_s,
        )  # fmt: skip
        record = ToolCallRecord(
            id=call_id, batch=batch, turn=turn, by="graph" if by == "graph" else "policy", name=str(name),
            arguments=dict(arguments), step=step, ok=outcome.ok, result=outcome.structured, error=outcome.error,
            handle=handle, latency_s=outcome.latency_s, started_at=started,
        )  # fmt: skip
        return record, outcome


@task
async def _tool_call_task(nodes: Nodes, pending: PendingCall, batch: int) -> ToolCallRecord:
    """One policy tool call as a LangGraph task of its own.

    Its record is saved as a pending write the moment it returns; a resumed parent task gets it
    back instead of calling again.
    """
    return await nodes.call_policy_tool(pending, batch)


def _blocking_call(nodes: Nodes, pending: PendingCall, batch: int) -> ToolCallRecord:
    """:func:`_tool_call_task` for sync runs (same task name: a thread resumes either way without a repeat)."""
    return nodes.tools.blocking(nodes.call_policy_tool(pending, batch))


_tool_call_task_blocking: Any = task(name="_tool_call_task")(_blocking_call)  # type: ignore[arg-type]


def _nothing_to_do(node: Node) -> str:
    wanted = {
        "plan": "a <plan>",
        "act": "one or more <tool_call> segments, or an <answer>",
        "reflect": "a <reflect> for every new image",
        "finish": "an <answer>",
    }[node]
    return f"the turn held nothing this node can use: write {wanted}"
