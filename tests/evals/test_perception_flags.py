"""`visioncreator eval` perception flags: the spawned synthetic server's observer noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from visioncreator.evals.cli import build_parser, settings_from_args
from visioncreator.tool_servers.synthetic import ObserverSettings


def _settings(tmp_path: Path, *flags: str):  # type: ignore[no-untyped-def]
    return settings_from_args(build_parser().parse_args(["--out", str(tmp_path), *flags]))


def test_perception_flags_reach_the_spawned_server_and_the_fingerprint(tmp_path: Path) -> None:
    default = _settings(tmp_path)
    assert default.observer is None
    assert "--observe-miss-rate" not in default.tool_spec().args
    exact = _settings(tmp_path, "--exact-perception")
    assert exact.observer == ObserverSettings.exact()
    args = list(exact.tool_spec().args)
    assert args[args.index("--observe-ocr-rate") + 1] == "0.0"
    some = _settings(tmp_path, "--observe-miss-rate", "0.2")
    assert some.observer == ObserverSettings(miss_rate=0.2)
    assert some.fingerprint()["observer"]["miss_rate"] == 0.2
    assert default.fingerprint() != exact.fingerprint()  # a resumed run cannot switch perception midway
    with pytest.raises(SystemExit):  # refused by the parser, one line naming the flag (tests/test_cli_explains.py)
        _settings(tmp_path, "--observe-miss-rate", "1.5")
