"""``visioncreator train sft|grpo|rpco --config FILE`` on a tiny random model: stages, resume, curves, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visioncreator.graph.cli import main as visioncreator_main
from visioncreator.rl.train.cli import main
from visioncreator.rl.train.config import PolicyModel
from visioncreator.rl.train.models import model_dir_for
from visioncreator.rl.train.stages import Curves, StageRecord

_STAGES = """
[eval_tasks]
splits = ["single"]
limit = 1
fault_rate = 0.0

[[stages]]
kind = "sft"
name = "sft"
max_steps = 1
batch_size = 1
learning_rate = 1e-3
save_steps = 1
max_length = 4096
tasks = { splits = ["single"], limit = 2, fault_rate = 0.0 }

[[stages]]
kind = "grpo"
name = "grpo"
max_steps = 1
groups_per_step = 1
num_generations = 2
max_turns = 2
max_completion_length = 512
save_steps = 1
tasks = { splits = ["single"], limit = 1, fault_rate = 0.0 }
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir_for(PolicyModel(model="tiny"), tmp_path_factory.mktemp("models"))


def _config(tmp_path: Path, tiny_dir: Path, stages: str = _STAGES) -> Path:
    path = tmp_path / "train.toml"
    head = (
        f'output_dir = "{tmp_path / "run"}"\neval_max_turns = 3\n'
        f'[policy]\nmodel = "{tiny_dir}"\nmax_new_tokens = 24\ntorch_threads = 1\n'
    )
    path.write_text(head + stages)
    return path


def test_two_stages_run_in_order_write_markers_and_curves_and_resume(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, tiny_dir)
    run = tmp_path / "run"

    # `train sft` runs only the SFT stage.
    assert main(["sft", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "stage 1/2 sft (sft) start" in err
    assert "sft step 1/1 loss=" in err
    assert "eval after initial: success" in err
    assert "eval after 01-sft: success" in err
    assert (run / "01-sft" / "stage.json").is_file()
    assert not (run / "02-grpo").exists()

    # `train rpco` skips the finished SFT stage and starts GRPO from its model.
    assert main(["rpco", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "stage 1/2 sft already finished, skipped" in err
    assert "stage 2/2 grpo (grpo) start" in err
    assert "grpo step 1/1" in err
    assert "reward=" in err
    sft = StageRecord.model_validate_json((run / "01-sft" / "stage.json").read_text())
    grpo = StageRecord.model_validate_json((run / "02-grpo" / "stage.json").read_text())
    assert sft.start_model == str(tiny_dir)
    assert grpo.start_model == sft.model_dir == str(run / "01-sft" / "model")
    assert (run / "02-grpo" / "checkpoint-1").is_dir()
    assert (Path(grpo.model_dir) / "config.json").is_file()

    curves = Curves.model_validate_json((run / "curves.json").read_text())
    assert [p.after for p in curves.evals] == ["initial", "01-sft", "02-grpo"]
    assert all(p.n == 1 and 0.0 <= p.success_rate <= 1.0 for p in curves.evals)
    assert [(c.name, [int(s["step"]) for s in c.steps]) for c in curves.stages] == [("sft", [1]), ("grpo", [1])]
    assert "loss" in curves.stages[0].steps[0]
    assert "reward" in curves.stages[1].steps[0]

    # Everything finished: a re-run trains nothing and leaves the markers as they were.
    before = (run / "02-grpo" / "stage.json").read_text()
    assert main(["rpco", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert err.count("already finished, skipped") == 2
    assert " start -> " not in err
    assert (run / "02-grpo" / "stage.json").read_text() == before


@pytest.mark.parametrize(
    ("mode", "stages", "named"),
    [
        ("rpco", '[[stages]]\nkind = "sft"\nmax_steps = 0\n', "stages.0.sft.max_steps"),
        ("grpo", '[[stages]]\nkind = "sft"\nmax_steps = 1\n', "stages: no 'grpo' stage"),
        ("sft", '[[stages]]\nkind = "sft"\nlearning_rate = "fast"\n', "stages.0.sft.learning_rate"),
        ("grpo", '[[stages]]\nkind = "grpo"\ngroups_per_step = 0\n', "stages.0.grpo.groups_per_step"),
        ("grpo", '[[stages]]\nkind = "grpo"\nbatch_size = 3\n', "stages.0.grpo: Value error, batch_size=3 must divide"),
        ("grpo", '[[stages]]\nkind = "grpo"\nbeta = -1\n', "stages.0.grpo.beta"),
    ],
)
def test_a_bad_config_exits_2_naming_the_file_and_field(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, stages: str, named: str
) -> None:
    config = _config(tmp_path, tiny_dir, stages)
    assert main([mode, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert named in err
    assert not (tmp_path / "run").exists()


def test_through_the_visioncreator_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert visioncreator_main(["train", "rpco", "--config", str(missing)]) == 2
    assert f"{missing}: cannot read" in capsys.readouterr().err
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "o"), "policy": {"model": str(tmp_path / "no-model")}}))
    assert visioncreator_main(["train", "rpco", "--config", str(path), "--max-steps", "1"]) == 2
    assert "policy.model" in capsys.readouterr().err


def test_a_stage_that_cannot_train_exits_1(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stages = (
        '[[stages]]\nkind = "sft"\nmax_steps = 1\ntasks = { splits = ["single"], limit = 1, fault_rate = 0.0 }\n'
        'select = [{ splits = ["multi"] }]\n'
    )
    config = _config(tmp_path, tiny_dir, stages)
    assert main(["sft", "--config", str(config), "--output-dir", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "TrainingError" in err
    assert "passes the selections" in err
    assert not (tmp_path / "other" / "01-sft" / "stage.json").exists()
