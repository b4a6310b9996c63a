"""How a collection runs: :class:`CollectConfig` (groups, seeds, tools, agent budgets, rewards, checkpoints)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from visioncreator.graph import AgentConfig, Budgets
from visioncreator.rl.rewards.scoring import REWARDS, RewardWeights
from visioncreator.tool_servers import ServerSettings

__all__ = ["CollectConfig"]


def _observer_field(name: str) -> Any:
    """A field with the synthetic server's own default and description (its ``inspect_image`` noise)."""
    server = ServerSettings.model_fields[name]
    return Field(default=server.default, ge=0.0, le=1.0, description=server.description)


class CollectConfig(BaseModel):
    """How a collection runs: groups, seeds, tools, agent budgets, rewards and checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_size: int = Field(default=4, ge=1, description="Samples per task (the GRPO group).")
    concurrency: int = Field(default=8, ge=1, description="Trajectories in flight at once.")
    seed: int = Field(default=0, description="Base run seed: sample i of a task runs with seed + i.")
    tool_seed: int = Field(default=0, description="Seed of the synthetic tool server (its own randomness).")
    call_seeds: Literal["shared", "independent", "policy"] = Field(
        default="shared",
        description="Seeds of the image calls. shared: the members of a group share them (common random numbers: "
        "derived from the task, the collection seed, the plan step and the attempt, so every member meets the same "
        "first-image faults and a redo draws a new image); independent: derived per member; policy: the policy's "
        "own seeds (a missing one derived per member). Every mode is reproducible from the seeds.",
    )
    fault_rate: float = Field(default=0.3, ge=0.0, le=1.0, description="Synthetic fault injection rate.")
    tool_latency_s: float = Field(
        default=0.0,
        ge=0.0,
        le=600.0,
        description="Seconds each image-producing call of the collector's own synthetic server waits before it "
        "returns (ServerSettings.simulated_latency_s): models an I/O-bound back end. Does not change trajectories.",
    )
    observe_miss_rate: float = _observer_field("observe_miss_rate")
    observe_count_rate: float = _observer_field("observe_count_rate")
    observe_color_rate: float = _observer_field("observe_color_rate")
    observe_ocr_rate: float = _observer_field("observe_ocr_rate")
    store: Path | None = Field(
        default=None,
        description="Image store shared with the tool server: where input images are rendered and where the "
        "collector's own synthetic servers (CLI, Ray workers) keep images. Needed for tasks with inputs.",
    )
    reflect: bool = Field(default=True, description="Run the reflect node (AgentConfig.reflect).")
    observe: Literal["inspect", "image", "both"] = Field(default="inspect", description="AgentConfig.observe.")
    max_turns: int = Field(default=40, ge=1, description="Budgets.max_turns.")
    max_tool_calls: int = Field(default=48, ge=1, description="Budgets.max_tool_calls.")
    max_redos_per_image: int = Field(default=3, ge=0, description="Budgets.max_redos_per_image.")
    wall_time_s: float = Field(default=900.0, gt=0, description="Budgets.wall_time_s.")
    max_format_retries: int = Field(default=3, ge=1, description="AgentConfig.max_format_retries.")
    policy_timeout_s: float = Field(default=300.0, gt=0, description="AgentConfig.policy_timeout_s.")
    recursion_limit: int = Field(default=400, ge=1, description="AgentConfig.recursion_limit.")
    rewards: dict[str, float] = Field(
        default_factory=lambda: dataclasses.asdict(RewardWeights()),
        description="Reward name -> weight of the total (names of visioncreator.rl.REWARDS; missing ones weigh 0).",
    )
    checkpoint: Path | None = Field(default=None, description="SQLite checkpoint file for mid-trajectory resume.")
    branch_at: Literal["reflect"] | None = Field(
        default=None,
        description="Branched rollouts: run one base trajectory per task, then fork every member of its group from "
        "the base's checkpoint where this node runs next (LangGraph time travel), so that all members start from "
        "the identical state and differ only from that decision on. None: every member runs from the start.",
    )
    branch_index: int = Field(
        default=0, ge=0, description="With branch_at: which of the base's branch points (0 = the first) to fork from."
    )
    policy_id: str | None = Field(
        default=None, description="Policy identity in trajectory ids; default: a hash of policy_info(policy)."
    )

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward names {unknown}; known: {sorted(REWARDS)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"reward weights must be non-negative with a positive sum, got {value}")
        return value

    def agent_config(self) -> AgentConfig:
        """The graph configuration these settings describe."""
        budgets = Budgets(
            max_turns=self.max_turns,
            max_tool_calls=self.max_tool_calls,
            max_redos_per_image=self.max_redos_per_image,
            wall_time_s=self.wall_time_s,
        )
        return AgentConfig(
            budgets=budgets,
            reflect=self.reflect,
            observe=self.observe,
            max_format_retries=self.max_format_retries,
            policy_timeout_s=self.policy_timeout_s,
            recursion_limit=self.recursion_limit,
            call_seeds="policy" if self.call_seeds == "policy" else "derived",
        )

    def observer_settings(self) -> dict[str, float]:
        """The synthetic server's observer rates (``ServerSettings`` fields)."""
        names = ("observe_miss_rate", "observe_count_rate", "observe_color_rate", "observe_ocr_rate")
        return {name: getattr(self, name) for name in names}

    def record_config(self) -> dict[str, Any]:
        """What a record keeps of the configuration: what shapes trajectories, not where files live."""
        return self.model_dump(mode="json", exclude={"concurrency", "store", "checkpoint", "tool_latency_s"})

    def branch_key(self) -> str:
        """What branching adds to trajectory ids (empty without branching, so old ids stay as they were)."""
        return f"branch:{self.branch_at}:{self.branch_index}" if self.branch_at else ""
