"""The offline default: the synthetic tool server plus the scripted expert policy.

The expert is a privileged teacher: its reflection oracle is the synthetic environment's own
critic, and the tools it calls are the tool server's; both are injected here (the policy
package imports nothing of the tool servers).
"""

from __future__ import annotations

from visioncreator.policy import ExpertConfig, ExpertPolicy, ToolRoles
from visioncreator.tool_servers import ToolName

EXPERT_TOOLS = ToolRoles(
    generate=ToolName.TEXT_TO_IMAGE,
    edit=ToolName.EDIT_IMAGE,
    reference=ToolName.REFERENCE_TO_IMAGE,
    inspect=ToolName.INSPECT_IMAGE,
)
"""The tool server's tools in the roles the expert calls them by."""


def expert_policy(config: ExpertConfig | None = None) -> ExpertPolicy:
    """The scripted expert, wired to the synthetic environment's critic and the tool server's tools."""
    from visioncreator.tool_servers.synthetic import critique

    return ExpertPolicy(critic=critique, tools=EXPERT_TOOLS, config=config or ExpertConfig())
