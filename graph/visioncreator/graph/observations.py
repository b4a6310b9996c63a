"""The tool message a policy turn reads first: the latest batch's results, each image with the graph's look."""

from __future__ import annotations

from typing import Literal

from visioncreator.graph.state import AgentState, batch_records
from visioncreator.policy import Message, Observation, observation_message
from visioncreator.tool_servers import ToolName

__all__ = ["new_observations"]


def new_observations(state: AgentState, observe: Literal["inspect", "image", "both"]) -> list[Message]:
    """The tool message for the latest batch, if the policy has not seen it yet (else none).

    Args:
        state: The graph's state.
        observe: How the policy sees a new image (``AgentConfig.observe``): with ``inspect`` the
            message carries the graph's inspections and no image handles.

    """
    batch = state.get("batch", 0)
    if state.get("shown_batch", 0) >= batch:
        return []
    inspections = state.get("inspections", {})
    inspects = observe in ("inspect", "both")
    observations: list[Observation] = []
    for r in batch_records(state.get("tool_calls", ()), batch):
        look = r.by == "graph" and r.name == ToolName.INSPECT_IMAGE
        if look and r.batch != 0:
            continue  # shown attached to the image it inspected
        inspection = r.result if look else (inspections.get(r.handle) if r.handle and inspects else None)
        observations.append(
            Observation(
                call_id=r.id,
                name=r.name,
                arguments=r.arguments,
                step=r.step,
                ok=r.ok,
                result=r.result,
                error=r.error,
                inspection=inspection if isinstance(inspection, dict) and "error" not in inspection else None,
            )
        )
    if not observations:
        return []
    message = observation_message(observations)
    if observe == "inspect":
        message = message.model_copy(update={"images": ()})
    return [message]
