"""The core install: importing the packages pulls in no heavy extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ["torch", "diffusers", "transformers", "trl", "ray", "vllm", "datasets", "peft", "accelerate"]


def test_core_imports_pull_in_no_heavy_extra() -> None:
    code = (
        "import sys, json\n"
        "import visioncreator.graph, visioncreator.policy, visioncreator.tool_servers, visioncreator.rl, "
        "visioncreator.evals\n"
        "import visioncreator.graph.cli, visioncreator.graph.offline, visioncreator.tool_servers.server\n"
        "import visioncreator.tool_servers.synthetic.backend, visioncreator.evals.suites\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_namespace_packages_resolve_from_their_folders() -> None:
    import visioncreator.evals
    import visioncreator.graph
    import visioncreator.policy
    import visioncreator.rl
    import visioncreator.tool_servers

    folders = {m.__name__.rsplit(".", 1)[1]: m.__file__ for m in (
        visioncreator.graph, visioncreator.policy, visioncreator.tool_servers, visioncreator.rl, visioncreator.evals
    )}  # fmt: skip
    for name, path in folders.items():
        assert path is not None
        assert f"/{name}/visioncreator/{name}/__init__.py" in path
    import visioncreator

    assert not hasattr(visioncreator, "__file__") or visioncreator.__file__ is None


BLOCKER = """
import sys
HEAVY = {heavy!r}

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{{name}} is blocked: the core install must not need it")
        return None

sys.meta_path.insert(0, _Block())
"""


def test_offline_run_works_without_any_extra(tmp_path: Path) -> None:
    """The offline default runs with every heavy extra unimportable, in the CLI and the tool server it spawns."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(heavy=[*HEAVY, "cv2", "onnxruntime", "rapidocr_onnxruntime"]))
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert "blocked" in probe.stderr, "the import blocker is not active"
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "visioncreator.graph", "run", "two green cups next to a red vase", "--n", "1",
         "--fault-rate", "0.3", "--out", str(out), "--quiet"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["termination"] == "answered"
    assert (out / "image_1.png").exists()


def test_eval_and_train_say_what_extra_they_need(tmp_path: Path) -> None:
    """Without the extras, `eval` still runs and reports (no plots, said on the page); `train` names the rl extra."""
    site = tmp_path / "site"
    site.mkdir()
    blocked = [*HEAVY, "cv2", "onnxruntime", "rapidocr_onnxruntime", "matplotlib", "tqdm", "trl", "datasets", "peft"]
    (site / "sitecustomize.py").write_text(BLOCKER.format(heavy=blocked))
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "visioncreator.graph", "eval", "--splits", "single", "--limit", "2", "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "summary.json").is_file()
    assert "matplotlib is not installed" in (out / "report.html").read_text()
    config = tmp_path / "train.toml"
    config.write_text('output_dir = "x"\n[policy]\nmodel = "tiny"\n[[stages]]\nkind = "sft"\n')
    train = subprocess.run(
        [sys.executable, "-m", "visioncreator.graph", "train", "sft", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert train.returncode == 2
    assert "pip install 'visioncreator[rl]'" in train.stderr
    assert "trl" in train.stderr
