"""Run a suite through the agent on the synthetic environment and score every task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from visioncreator.evals.scoring import TaskScore, score_task
from visioncreator.evals.suite import InputImage, SuiteTask
from visioncreator.graph.builder import build_agent
from visioncreator.graph.client import ToolClient, ToolServerSpec
from visioncreator.graph.config import AgentConfig
from visioncreator.graph.offline import expert_policy
from visioncreator.graph.runner import run_task
from visioncreator.policy.expert import ExpertConfig
from visioncreator.policy.types import Task
from visioncreator.tool_servers.scene import Scene
from visioncreator.tool_servers.schemas import TextToImageInput
from visioncreator.tool_servers.store import ImageStore
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings


@dataclass(frozen=True, kw_only=True)
class SuiteRun:
    """How to run a suite on the offline default."""

    store: Path
    """Image store shared by this process and the spawned tool server."""
    fault_rate: float = 0.3
    """Synthetic fault injection rate."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Graph configuration (reflection on or off, budgets)."""
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    """Expert policy configuration (its error modes)."""
    concurrency: int = 4
    """Tasks in flight at once."""
    seed: int = 0
    """Seed of every task's run."""


async def put_input(store: ImageStore, image: InputImage) -> tuple[str, Scene]:
    """Render an input image (faults off) straight into a store the tool server shares; its handle and scene."""
    backend = SyntheticBackend(SyntheticSettings(fault_rate=0.0))
    args = TextToImageInput(prompt=image.prompt, width=image.width, height=image.height, seed=image.seed)
    generated = await backend.text_to_image(args)
    stored = store.put(generated.image, generated.truth)
    assert generated.truth is not None
    return stored.handle, generated.truth.scene


async def run_suite(
    tasks: Sequence[SuiteTask], run: SuiteRun, *, on_done: Callable[[TaskScore], None] | None = None
) -> list[TaskScore]:
    """Run every task with the expert on the synthetic tool server (a stdio subprocess) and score it."""
    store = ImageStore(run.store)
    spec = ToolServerSpec.synthetic(store=str(run.store), fault_rate=run.fault_rate)
    policy = expert_policy(run.expert)
    gate = asyncio.Semaphore(run.concurrency)
    async with ToolClient(spec=spec) as tools:
        agent = build_agent(policy=policy, tools=tools, config=run.agent, checkpointer=InMemorySaver())

        async def one(task: SuiteTask) -> TaskScore:
            async with gate:
                inputs = [await put_input(store, image) for image in task.inputs]
                agent_task = Task(
                    request=task.request, n_images=task.n_images, split=task.split,
                    inputs=tuple(h for h, _ in inputs), id=task.id,
                )  # fmt: skip
                result = await run_task(agent, agent_task, seed=run.seed, thread_id=f"{task.id}-{run.seed}")
                state = result.state
                handles = {c["handle"] for c in state.get("tool_calls", []) if c.get("handle")}
                truths = {}
                for handle in handles:
                    truth = store.truth(handle)
                    if truth is not None:
                        truths[handle] = truth.model_dump(mode="json")
                score = score_task(
                    task, answer=list(state.get("answer") or []), truths=truths,
                    input_scenes=[s for _, s in inputs], turns=state.get("turns", []),
                    tool_calls=state.get("tool_calls", []), termination=str(state.get("termination")),
                )  # fmt: skip
                if on_done is not None:
                    on_done(score)
                return score

        return list(await asyncio.gather(*(one(t) for t in tasks)))
