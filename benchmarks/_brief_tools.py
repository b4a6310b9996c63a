"""The synthetic tool server with one-line tool descriptions and results without bookkeeping fields.

The real server's descriptions and JSON schemas make a ~2.4k-token system prompt for SmolLM2 and
each observation ~500 tokens: the cost of every turn on two shared cores. ``rl_learning.py`` runs
every phase on :class:`BriefTools` (training and evaluation see the same prompts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from visioncreator.graph import ToolClient, ToolOutcome
from visioncreator.policy import ToolSpec
from visioncreator.rl import CollectConfig

_STRING = {"type": "string"}
_SEED = {"type": "integer"}
BRIEF: dict[str, tuple[str, dict[str, Any]]] = {
    "text_to_image": ("Make one image from a prompt.", {"prompt": _STRING, "seed": _SEED}),
    "edit_image": ("Change an image by an instruction.", {"image": _STRING, "instruction": _STRING, "seed": _SEED}),
    "reference_to_image": (
        "Make an image whose subjects look like the reference images.",
        {"prompt": _STRING, "references": {"type": "array", "items": _STRING}, "seed": _SEED},
    ),
    "inspect_image": ("Describe what is in an image.", {"image": _STRING}),
}
_DROP = frozenset({"generator_s", "bytes", "uri", "mime_type", "tool", "answers", "analysis", "preview"})


@dataclasses.dataclass(kw_only=True)
class BriefTools(ToolClient):
    """The synthetic tool server with short tool descriptions and results without bookkeeping fields."""

    def policy_tools(self) -> tuple[ToolSpec, ...]:
        """One-line descriptions and minimal schemas (the server still validates the full ones)."""
        specs = []
        for tool in super().policy_tools():
            description, properties = BRIEF.get(tool.name, (tool.description, {}))
            schema = {"type": "object", "properties": properties} if properties else tool.input_schema
            specs.append(ToolSpec(name=tool.name, description=description, input_schema=schema))
        return tuple(specs)

    async def call(self, name: str, arguments: Mapping[str, Any], *, look: bool = False) -> ToolOutcome:
        """The server's outcome, minus fields no policy needs."""
        outcome = await super().call(name, arguments, look=look)
        if outcome.structured is None:
            return outcome
        kept = {k: v for k, v in outcome.structured.items() if k not in _DROP}
        seen = outcome.inspection
        seen = None if seen is None else {k: v for k, v in seen.items() if k not in _DROP}
        return dataclasses.replace(outcome, structured=kept, inspection=seen)


def brief_tools(config: CollectConfig, *, max_queue: int = 4096) -> ToolClient:
    """Like ``collector.synthetic_tools``, as :class:`BriefTools`."""
    from visioncreator.tool_servers import ServerSettings, build_server

    assert config.store is not None
    settings = ServerSettings(
        store_root=config.store, fault_rate=config.fault_rate, tool_seed=config.tool_seed, max_queue=max_queue
    )
    return BriefTools(server=build_server(settings))
