"""``visioncreator run --policy URL`` against the real vLLM server (a random model: structure only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from visioncreator.policy.vllm import VLLMServer


def test_run_with_a_served_policy_records_token_ids(vllm_server: VLLMServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "visioncreator.graph", "run", "a red kite", "--policy", vllm_server.base_url,
         "--max-tokens", "24", "--max-turns", "3", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # A random model writes junk: the run ends by a budget, never by a crash, and keeps every turn.
    assert "Traceback" not in done.stderr, done.stderr
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert trajectory["termination"] in {"budget_turns", "format_errors", "no_answer", "invalid_answer", "answered"}
    assert trajectory["config"]["policy"] == vllm_server.base_url
    turns = trajectory["turns"]
    assert turns
    for turn in turns:
        assert turn["model"] == vllm_server.model
        assert turn["prompt_token_ids"]
        assert turn["completion_token_ids"]
        assert len(turn["logprobs"]) == len(turn["completion_token_ids"]) <= 24
