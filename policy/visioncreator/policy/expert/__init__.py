"""The scripted expert: a teacher policy for the synthetic environment, and what it reads back."""

from visioncreator.policy.expert.policy import Critic, ExpertConfig, ExpertPolicy
from visioncreator.policy.expert.state import ToolRoles

__all__ = ["Critic", "ExpertConfig", "ExpertPolicy", "ToolRoles"]
