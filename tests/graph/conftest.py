"""Graph test fixtures: a real MCP tool server in-process, and helpers to run tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visioncreator.graph import AgentConfig, ToolClient, build_agent, run_task
from visioncreator.graph.offline import expert_policy
from visioncreator.graph.runner import RunResult
from visioncreator.policy import Policy, Task
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.observer import ObserverSettings


def make_client(store: Path, fault_rate: float = 0.0, observer: ObserverSettings | None = None) -> ToolClient:
    """A client connected in-process to the real tool server (in-memory MCP transport).

    Its ``inspect_image`` reports the exact ground truth unless ``observer`` sets error rates:
    these tests are about the loop, and their expectations assume perception without mistakes.
    """
    settings = ServerSettings(store_root=store, fault_rate=fault_rate)
    observer = observer or ObserverSettings.exact()
    backend = SyntheticBackend(SyntheticSettings(fault_rate=fault_rate, observer=observer))
    return ToolClient(server=build_server(settings, backend=backend))


async def run(
    tools: ToolClient,
    task: Task,
    *,
    policy: Policy | None = None,
    config: AgentConfig | None = None,
    seed: int = 0,
    checkpointer: Any = None,
) -> RunResult:
    from langgraph.checkpoint.memory import InMemorySaver

    agent = build_agent(
        policy=policy or expert_policy(),
        tools=tools,
        config=config,
        checkpointer=checkpointer if checkpointer is not None else InMemorySaver(),
    )
    return await run_task(agent, task, seed=seed)
