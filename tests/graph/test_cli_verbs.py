"""`visioncreator eval`, `train` and `collect` hand every argument, `--help` included, to their own parsers."""

from __future__ import annotations

import pytest

from visioncreator.graph.cli import main


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
