"""Start-up costs: the CLI, a spawned tool server, and a preloaded diffusion back end.

Every figure is the median of ``--reps`` fresh processes (the OS file cache is warm after the
first; that is the case a user meets on the second run):

- ``help``: ``visioncreator --help`` and ``visioncreator run --help``, start to exit;
- ``run``: ``visioncreator run`` (expert policy, synthetic tools, ``--memory``) from process start
  to the first progress line (``task: ...``, printed when the graph starts, after the tool server
  answered), to the first policy turn's line (``[plan] turn 0``, right after the first policy
  call returns), and to exit;
- ``stdio server``: spawn of ``python -m visioncreator.tool_servers`` to its answer to
  ``initialize`` (raw JSON-RPC, no client library);
- ``http server``: spawn of ``--transport http --port 0`` to its ``listening on`` line, and to
  ``GET /ready`` answering 200 (when the server has ``/ready``);
- floors: ``python -c pass`` and the bare imports of the libraries ``run`` cannot do without;
- ``tiny`` back end, with ``--preload`` and ``--no-preload`` (when the server has the flags):
  spawn to ``initialize`` answered, then the first ``text_to_image`` latency.

Usage: python benchmarks/startup.py [--reps 5] [--tiny-reps 3] [--skip-tiny] [--baseline TREE]

``--baseline TREE`` measures another source tree (``mkdir B && git archive HEAD | tar -x -C B``)
in the same run, interleaved with this one, through the same installed dependencies, and prints
the ratios: the way to compare on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

PY = sys.executable
BIN = Path(PY).parent
SERVER = [PY, "-m", "visioncreator.tool_servers"]
TIMEOUT_S = 120.0
FLOORS = {
    "python -c pass": "pass",
    "import langgraph.graph": "import langgraph.graph",
    "import mcp.client.session": "import mcp.client.session",
    "import mcp.server.mcpserver": "import mcp.server.mcpserver",
    "import langgraph.graph, mcp.client.session": "import langgraph.graph, mcp.client.session",
}


def _median(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.0f} ms  (min {min(samples) * 1000:.0f}, n={len(samples)})"


ENV: dict[str, str] | None = None
"""The environment of every process started (``--baseline`` points PYTHONPATH at another source tree)."""


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=TIMEOUT_S, env=ENV
    )
    return time.perf_counter() - start


def _run_marks(folder: Path) -> dict[str, float]:
    """Seconds from spawning ``visioncreator run`` to its first progress line, first plan turn, exit."""
    command = [str(BIN / "visioncreator"), "run", "a red circle", "--out", str(folder), "--memory"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    assert process.stderr is not None
    marks: dict[str, float] = {}
    for line in process.stderr:
        now = time.perf_counter() - start
        if line.startswith("task:"):
            marks.setdefault("first progress line", now)
        elif line.startswith("[plan]"):
            marks.setdefault("first policy turn done", now)
    process.wait(timeout=TIMEOUT_S)
    marks["exit"] = time.perf_counter() - start
    if process.returncode != 0 or len(marks) != 3:
        raise RuntimeError(f"visioncreator run failed ({process.returncode}): {marks}")
    return marks


def _send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _answer(stream: IO[str], ident: int) -> dict[str, Any]:
    for line in stream:
        message = json.loads(line)
        if message.get("id") == ident:
            return dict(message)
    raise RuntimeError("the server closed stdout")


_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}


def _stdio(store: Path, *extra: str, call: dict[str, Any] | None = None) -> tuple[float, float | None]:
    """Spawn to ``initialize`` answered; then (optionally) one ``tools/call`` round trip."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [*SERVER, "--store", str(store), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        _send(process.stdin, _INIT)
        _answer(process.stdout, 1)
        ready = time.perf_counter() - start
        latency = None
        if call is not None:
            _send(process.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            begun = time.perf_counter()
            _send(process.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
            result = _answer(process.stdout, 2)
            latency = time.perf_counter() - begun
            if "error" in result or result["result"].get("isError"):
                raise RuntimeError(f"tool call failed: {result}")
        return ready, latency
    finally:
        process.stdin.close()
        process.wait(timeout=TIMEOUT_S)


def _http(store: Path) -> tuple[float, float | None]:
    """Spawn to the ``listening on`` line, and to ``GET /ready`` 200 (None: no /ready route)."""
    start = time.perf_counter()
    command = [*SERVER, "--transport", "http", "--port", "0", "--store", str(store)]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    assert process.stderr is not None
    try:
        url = None
        for raw in process.stderr:
            found = re.search(r"listening on (http://\S+)", raw.decode())
            if found:
                url = found.group(1)
                break
        listening = time.perf_counter() - start
        if url is None:
            raise RuntimeError("the HTTP server did not start")
        base = url.rsplit("/", 1)[0]
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=5) as response:
                    if response.status == 200:
                        return listening, time.perf_counter() - start
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return listening, None
            time.sleep(0.005)
        raise RuntimeError("/ready never answered 200")
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT_S)


def _has_preload() -> bool:
    text = subprocess.run([*SERVER, "--help"], capture_output=True, text=True, check=True, env=ENV).stdout
    return "--preload" in text


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _measure_once(root: Path) -> dict[str, float]:
    """One sample of every CLI and server figure, with the sources ``ENV`` points at."""
    figures: dict[str, float] = {}
    figures["visioncreator --help"] = _wall([str(BIN / "visioncreator"), "--help"])
    figures["visioncreator run --help"] = _wall([str(BIN / "visioncreator"), "run", "--help"])
    marks = _run_marks(root / f"run{time.monotonic_ns()}")
    for mark in ("first progress line", "first policy turn done", "exit"):
        figures[f"visioncreator run: {mark}"] = marks[mark]
    figures["stdio server: spawn to initialize answered"] = _stdio(root / "stdio")[0]
    listening, ready = _http(root / "http")
    figures["http server: spawn to listening line"] = listening
    if ready is not None:
        figures["http server: spawn to /ready 200"] = ready
    return figures


def _tiny(root: Path, reps: int) -> None:
    _section("tiny back end (stdio): spawn to initialize answered; first text_to_image")
    call = {"name": "text_to_image", "arguments": {"prompt": "a red circle", "width": 64, "height": 64, "seed": 1}}
    modes = ("--preload", "--no-preload") if _has_preload() else ("(no --preload flag)",)
    for mode in modes:
        flags = ["--backend", "tiny"] + ([mode] if mode.startswith("--") else [])
        results = [_stdio(root / "tiny", *flags, call=call) for _ in range(reps)]
        latencies = [r[1] for r in results if r[1] is not None]
        print(f"{mode + ': ready':45s} {_median([r[0] for r in results])}")
        print(f"{mode + ': first text_to_image':45s} {_median(latencies)}")
        total = [r[0] + (r[1] or 0.0) for r in results]
        print(f"{mode + ': ready + first call':45s} {_median(total)}")


def _baseline_env(tree: Path) -> dict[str, str]:
    """Run another source tree (e.g. ``git archive HEAD``) through this environment's installation."""
    folders = [str(tree / name) for name in ("graph", "policy", "tool_servers", "rl", "evals")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(folders)}


def main() -> None:
    """Run every measurement and print the medians."""
    global ENV
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="processes per figure")
    parser.add_argument("--tiny-reps", type=int, default=3, help="processes per tiny back-end figure")
    parser.add_argument("--skip-tiny", action="store_true", help="skip the tiny back end (needs torch, diffusers)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a source tree to compare with in the same run, interleaved (make one with "
        "`mkdir B && git archive HEAD | tar -x -C B`); its tiny figures run after this tree's",
    )
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    sources = {"current": None} if options.baseline is None else {"baseline": _baseline_env(options.baseline),
                                                                  "current": None}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _wall([str(BIN / "visioncreator"), "--help"])  # warm the file cache once
        floors: dict[str, list[float]] = {label: [] for label in FLOORS}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in sources}
        for _ in range(options.reps):
            for label, code in FLOORS.items():
                floors[label].append(_wall([PY, "-c", code]))
            for name, env in sources.items():  # interleaved: load changes hit both alike
                ENV = env
                for label, value in _measure_once(root).items():
                    samples[name].setdefault(label, []).append(value)
        ENV = None
        _section("library floors (python -c ...)")
        for label, values in floors.items():
            print(f"{label:45s} {_median(values)}")
        for name in sources:
            _section(f"CLI and spawned synthetic tool server: {name}")
            for label, values in samples[name].items():
                print(f"{label:45s} {_median(values)}")
        if "baseline" in samples:
            _section("current / baseline (ratio of medians)")
            for label, values in samples["current"].items():
                before = samples["baseline"].get(label)
                if before:
                    print(f"{label:45s} {statistics.median(values) / statistics.median(before):7.2f}x")
        if options.skip_tiny:
            return
        for name, env in sources.items():
            ENV = env
            print(f"\n[{name}]")
            _tiny(root, options.tiny_reps)


if __name__ == "__main__":
    main()
