"""Device and dtype of training: resolved from the policy, given to the TRL arguments and the model, and a
tiny SFT and GRPO run under ``accelerate launch`` (one CPU process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from visioncreator.rl.train.cli import main
from visioncreator.rl.train.config import ConfigError, GRPOStage, LoraSpec, PolicyModel, SFTStage
from visioncreator.rl.train.device import Placement, resolve_placement
from visioncreator.rl.train.harness import load_start_model, trl_args
from visioncreator.rl.train.models import model_dir_for

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

ACCELERATE = Path(sys.executable).with_name("accelerate")


def _launch(command: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a launcher and its worker processes; on a timeout, stop the whole process group."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{command[:3]} did not finish in {timeout} s")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir_for(PolicyModel(model="tiny"), tmp_path_factory.mktemp("models"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU defaults; a GPU machine resolves to cuda")
def test_auto_is_the_cpu_in_float32_here_and_the_trl_args_say_so(tmp_path: Path) -> None:
    placement = resolve_placement(PolicyModel(model="tiny"))
    assert placement == Placement(device="cpu", dtype="float32")
    for stage in (SFTStage(), GRPOStage()):
        args = trl_args(stage, tmp_path, 0, placement)
        assert (args["use_cpu"], args["bf16"], args["fp16"]) == (True, False, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize(
    ("fields", "named"),
    [({"device": "cuda"}, "policy.device: 'cuda' asked for"), ({"dtype": "float16"}, "policy.dtype: float16")],
)
def test_what_cannot_run_here_is_refused_naming_the_field(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        resolve_placement(PolicyModel(model="tiny", **fields))


@pytest.mark.parametrize(("bf16", "dtype"), [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_gpu_is_cuda_in_bfloat16_where_it_has_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bf16: bool, dtype: str
) -> None:
    # Resolution only (nothing runs on the device): what a GPU machine reports, patched in.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    placement = resolve_placement(PolicyModel(model="tiny"))
    assert placement == Placement(device="cuda", dtype=dtype)  # type: ignore[arg-type]
    args = trl_args(GRPOStage(), tmp_path, 0, placement)
    assert (args["use_cpu"], args["bf16"], args["fp16"]) == (False, bf16, not bf16)
    assert resolve_placement(PolicyModel(model="tiny", device="cpu")) == Placement(device="cpu", dtype="float32")


def test_the_model_loads_in_float32_when_it_trains_and_in_the_compute_dtype_under_lora(
    tiny_dir: Path, tmp_path: Path
) -> None:
    placement = resolve_placement(PolicyModel(model="tiny", device="cpu", dtype="bfloat16"))
    assert placement == Placement(device="cpu", dtype="bfloat16")
    assert trl_args(SFTStage(), tmp_path, 0, placement)["bf16"] is True
    full = PolicyModel(model=str(tiny_dir), device="cpu", dtype="bfloat16")
    _, model, _ = load_start_model(full, None)
    assert model.dtype == torch.float32  # trained weights stay float32 (mixed precision)
    lora = full.model_copy(update={"lora": LoraSpec(r=4)})
    _, model, _ = load_start_model(lora, None)
    assert model.dtype == torch.bfloat16  # frozen base weights in the compute dtype


def test_rollouts_generate_in_the_compute_dtype_from_a_copy_only_where_full_weights_train_in_mixed_precision() -> None:
    mixed, plain = Placement(device="cpu", dtype="bfloat16"), Placement(device="cpu", dtype="float32")
    assert mixed.rollout_dtype(lora=False) == "bfloat16"  # float32 weights: generate from a bfloat16 copy
    assert mixed.rollout_dtype(lora=True) == "same"  # the frozen base is already in bfloat16
    assert plain.rollout_dtype(lora=False) == "same"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_the_cli_refuses_cuda_here_with_exit_2_naming_file_and_field(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text(
        f'output_dir = "{tmp_path / "run"}"\n[policy]\nmodel = "{tiny_dir}"\ndevice = "cuda"\n'
        '[[stages]]\nkind = "sft"\nmax_steps = 1\n'
    )
    assert main(["sft", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: policy.device: 'cuda' asked for" in err
    assert not (tmp_path / "run").exists()


_LAUNCHED = """
[[stages]]
kind = "sft"
name = "sft"
max_steps = 1
batch_size = 1
learning_rate = 1e-3
max_length = 4096
tasks = { splits = ["single"], limit = 1, fault_rate = 0.0 }

[[stages]]
kind = "grpo"
name = "grpo"
max_steps = 1
groups_per_step = 1
num_generations = 2
batch_size = 1
max_turns = 1
max_completion_length = 256
tasks = { splits = ["single"], limit = 1, fault_rate = 0.0 }
"""


@pytest.mark.skipif(not ACCELERATE.is_file(), reason="accelerate's launcher is not installed")
def test_sft_and_grpo_run_under_accelerate_launch(tiny_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.toml"
    run = tmp_path / "run"
    config.write_text(
        f'output_dir = "{run}"\n[policy]\nmodel = "{tiny_dir}"\nmax_new_tokens = 16\ntorch_threads = 1\n'
        f"[policy.lora]\nr = 4\n{_LAUNCHED}"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    command = [str(ACCELERATE), "launch", "--num_processes", "1", "--num_machines", "1", "--cpu"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", "visioncreator.rl.train", "rpco", "--config", str(config)]
    done = _launch(command, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "device cpu, dtype float32, 1 process(es)" in done.stderr
    assert "grpo step 1/1" in done.stderr
    for stage in ("01-sft", "02-grpo"):
        assert (run / stage / "stage.json").is_file()
        assert (run / stage / "model" / "config.json").is_file()


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed")
def test_two_processes_each_roll_out_their_own_groups_of_a_step(tiny_dir: Path, tmp_path: Path) -> None:
    # accelerate launches several CPU processes only through mpirun; torchrun starts the same
    # processes (gloo) that `accelerate launch --num_processes 2` starts on two GPUs.
    config = tmp_path / "train.toml"
    run = tmp_path / "run"
    config.write_text(
        f'output_dir = "{run}"\n[policy]\nmodel = "{tiny_dir}"\nmax_new_tokens = 8\ntorch_threads = 1\n'
        '[[stages]]\nkind = "grpo"\nname = "grpo"\nmax_steps = 1\ngroups_per_step = 2\nnum_generations = 2\n'
        'max_turns = 1\nmax_completion_length = 256\ntasks = { splits = ["single"], limit = 2, fault_rate = 0.0 }\n'
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "visioncreator.rl.train"]
    command += ["grpo", "--config", str(config)]
    done = _launch(command, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("device cpu, dtype float32, 2 process(es)") == 1  # the main process reports
    record = json.loads((run / "01-grpo" / "stage.json").read_text())
    # Two groups a step over two processes: the main process rolled out one of them.
    assert record["metrics"]["groups"] == 1.0
    assert [e["groups/total"] for e in record["log_history"] if "loss" in e] == [1.0]
    assert (run / "01-grpo" / "model" / "config.json").is_file()
