"""How an eval run is made: the settings of ``visioncreator eval``, and what must not change when it resumes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from visioncreator.evals.errors import EvalSettingsError
from visioncreator.graph import AgentConfig, ToolServerSpec
from visioncreator.policy import ExpertConfig
from visioncreator.tool_servers.synthetic import ObserverSettings

__all__ = ["BACKENDS", "EvalSettings"]

BACKENDS = ("synthetic", "tiny", "diffusers")
"""Tool back ends ``visioncreator eval`` can spawn."""


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """How to run a suite (the ``visioncreator eval`` flags)."""

    out: Path
    """Run folder."""
    suite: Path | None = None
    """Suite file (JSONL); ``None`` is the built-in synthetic suite."""
    policy: str = "expert"
    """``expert``, an OpenAI-compatible base URL, or a local model directory."""
    tools: str = "synthetic"
    """Tool back end to spawn (``synthetic``, ``tiny``, ``diffusers``) or a streamable HTTP URL."""
    concurrency: int = 4
    """Tasks in flight at once."""
    fault_rate: float = 0.0
    """Synthetic fault injection rate of a spawned server."""
    seed: int = 0
    """Seed of every task's run."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Graph configuration (reflection on or off, budgets)."""
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    """Error rates of the expert policy (its seed is ``seed``)."""
    splits: tuple[str, ...] = ()
    """Only these splits (empty: all)."""
    limit: int | None = None
    """Only the first ``limit`` tasks (after the split filter)."""
    model: str | None = None
    """Served model name for a URL policy."""
    max_tokens: int = 1024
    """Most tokens per turn of a URL or local policy."""
    judge: str | None = None
    """OpenAI-compatible base URL of a vision judge."""
    judge_model: str | None = None
    """Model name on the judge server (default: its first)."""
    judge_mode: Literal["image", "text"] = "image"
    """``image`` sends the images (a vision model); ``text`` sends inspect_image's description of each."""
    label: str = ""
    """A name for the run in reports."""
    tool_latency: float = 0.0
    """Simulated seconds per generated image of a spawned server (for load and resume tests)."""
    observer: ObserverSettings | None = None
    """Error rates of a spawned synthetic server's ``inspect_image`` (``ObserverSettings.exact()``: the
    ground truth); ``None`` keeps the server's documented defaults."""
    allow_outside_inputs: bool = False
    """Let the suite's input image paths lead outside the suite file's folder (``--allow-outside-inputs``).
    Off: such a task is a load error and nothing is read. Not part of :meth:`fingerprint` (it changes
    which files may be read, not how a task runs)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise EvalSettingsError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise EvalSettingsError(f"fault rate must be in [0, 1], got {self.fault_rate}")
        if self.limit is not None and self.limit < 0:
            raise EvalSettingsError(f"limit must not be negative, got {self.limit}")
        if self.tools not in BACKENDS and not self.tools.startswith(("http://", "https://")):
            raise EvalSettingsError(f"--tools {self.tools!r}: expected {', '.join(BACKENDS)} or an http(s):// URL")

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {
            "suite": str(self.suite) if self.suite else "builtin:synthetic",
            "policy": self.policy,
            "tools": self.tools,
            "fault_rate": self.fault_rate,
            "observer": None if self.observer is None else asdict(self.observer),
            "seed": self.seed,
            "reflect": self.agent.reflect,
            "observe": self.agent.observe,
            "budgets": self.agent.budgets.as_dict(),
            "expert": {k: v for k, v in asdict(self.expert).items() if k != "seed"} if self.policy == "expert" else {},
            "judge": self.judge,
            "judge_model": self.judge_model,
            "judge_mode": self.judge_mode if self.judge else None,
        }

    def tool_spec(self) -> ToolServerSpec:
        """The tool server of the run: the URL given, or a spawned one with its store in the run folder."""
        if self.tools.startswith(("http://", "https://")):
            return ToolServerSpec(url=self.tools, token=os.environ.get("VISIONCREATOR_TOKEN"))
        extra = ["--backend", self.tools]
        if self.tool_latency:
            extra += ["--latency", str(self.tool_latency)]
        return ToolServerSpec.synthetic(
            store=str(self.out / "store"), fault_rate=self.fault_rate, observer=self.observer, extra_args=extra
        )
