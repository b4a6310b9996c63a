"""The offline default: the synthetic tool server plus the scripted expert policy.

The expert is a privileged teacher: its reflection oracle is the synthetic environment's own
critic, injected here (the policy package imports nothing of the tool servers).
"""

from __future__ import annotations

from visioncreator.policy.expert import ExpertConfig, ExpertPolicy


def expert_policy(config: ExpertConfig | None = None) -> ExpertPolicy:
    """The scripted expert, wired to the synthetic environment's critic."""
    from visioncreator.tool_servers.synthetic.checklist import critique

    return ExpertPolicy(critic=critique, config=config or ExpertConfig())
