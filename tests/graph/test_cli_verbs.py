"""`visioncreator eval`, `train` and `collect` hand every argument, `--help` included, to their own parsers."""

from __future__ import annotations

import pytest

from visioncreator.graph.cli import commands, main


@pytest.mark.parametrize(("verb", "flag"), [("eval", "--suite"), ("train", "--config"), ("collect", "--group-size")])
def test_verb_help_is_the_verbs_own(verb: str, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"visioncreator {verb}" in out
    assert flag in out


def test_train_without_a_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "sft"])
    assert exc.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_the_subcommands_of_other_packages_come_from_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    plugged = commands()
    assert set(plugged) == {"eval", "collect", "train", "serve-tools", "serve-policy"}
    assert {ep.value.split(".")[1] for ep in plugged.values()} == {"evals", "rl", "tool_servers", "policy"}
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in plugged:
        assert name in out
    assert "Collect scored expert trajectories" in out  # the summary is the command's own docstring
