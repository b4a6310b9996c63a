"""Whether the tool server is ready to serve calls, and the preload that gets it there.

A diffusion back end loads its pipelines on first use unless told to preload: the first call
of each pipeline would then pay seconds (a tiny pipeline on a CPU) to minutes (a real model)
inside someone's task. With ``preload`` (the default for the ``diffusers`` and ``tiny`` back
ends) the server loads every model its registry's tools use before it answers ``initialize``
(stdio) or announces that it listens (HTTP); over HTTP ``GET /ready`` answers 503 until then.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = ["Preloadable", "Readiness"]


@runtime_checkable
class Preloadable(Protocol):
    """A back end whose models can be loaded ahead of the first call (``DiffusersBackend``)."""

    def models_in_use(self) -> list[str]:
        """The models the tools use, in tool order, each once."""
        ...

    def load_model(self, name: str) -> None:
        """Load model ``name`` now (blocking); a no-op when it is loaded."""
        ...

    def loaded_models(self) -> list[str]:
        """The models loaded so far."""
        ...


class Readiness:
    """What the server has loaded and whether it serves calls yet; safe to read from any thread.

    Args:
        backend: The image back end the server runs.
        backend_name: Its name in ``/ready`` answers (``synthetic``, ``tiny``, ``diffusers``).
        preload: Whether :meth:`preload` is to load its models before the server is ready; without
            it (or for a back end with nothing to load) the server is ready at once.
    """

    def __init__(self, backend: object, *, backend_name: str, preload: bool) -> None:
        self._backend = backend if isinstance(backend, Preloadable) else None
        self._name = backend_name
        self._preload = preload and self._backend is not None
        self._ready = threading.Event()
        self._loading: str | None = None
        self._error: str | None = None
        self._load_s: float | None = None
        if not self._preload:
            self._ready.set()

    @property
    def ready(self) -> bool:
        """Whether the server serves calls without a model load on the way."""
        return self._ready.is_set()

    def preload(self, log: TextIO | None = None) -> None:
        """Load every model the tools use (blocking), printing one line per model to ``log``.

        Does nothing when preloading is off or already done.

        Raises:
            Exception: Whatever loading a model raised (e.g. ``ModelNotAvailableError``); the
                server is then not ready and ``/ready`` says why.
        """
        if self._ready.is_set() or self._backend is None:
            return
        stream = log if log is not None else sys.stderr
        names = self._backend.models_in_use()
        start = time.perf_counter()
        for index, name in enumerate(names, 1):
            self._loading = name
            print(f"visioncreator tool server: loading model {name} ({index}/{len(names)})", file=stream, flush=True)
            began = time.perf_counter()
            try:
                self._backend.load_model(name)
            except Exception as exc:
                self._error = f"model {name}: {type(exc).__name__}: {exc}"
                raise
            print(
                f"visioncreator tool server: loaded model {name} in {time.perf_counter() - began:.1f} s",
                file=stream,
                flush=True,
            )
        self._loading = None
        self._load_s = time.perf_counter() - start
        self._ready.set()

    def snapshot(self) -> dict[str, Any]:
        """The ``/ready`` answer: ready or not, the back end, the models loaded and in use."""
        answer: dict[str, Any] = {"ready": self.ready, "backend": self._name, "preload": self._preload}
        if self._backend is not None:
            answer["models"] = self._backend.models_in_use()
            answer["loaded"] = self._backend.loaded_models()
        if self._loading is not None and not self.ready:
            answer["loading"] = self._loading
        if self._error is not None:
            answer["error"] = self._error
        if self._load_s is not None:
            answer["load_s"] = round(self._load_s, 3)
        return answer
