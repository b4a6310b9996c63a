"""The worker side of the process pool (:mod:`~visioncreator.rl.collection.pool`), and the messages both sides send.

A worker process builds its policy and tool client, says ``ready``, then runs every ``job`` the
driver sends as its own task and answers each with a ``record`` or a ``failed``. It stops at
``stop`` or when its socket closes (the driver is gone), and reports anything that kills it as
``fatal``. Messages are length-prefixed pickles over a socket pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import pickle
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

from visioncreator.graph import ToolClient, ToolServerSpec
from visioncreator.rl.collection.collector import Collector, synthetic_tools
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.jobs import Job
from visioncreator.rl.collection.run import is_outage
from visioncreator.rl.collection.workers import PolicyFactory, PolicySpec, build_policy

__all__ = ["receive", "send", "worker_main"]

_HEADER = struct.Struct("!Q")


async def send(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    """Send one message (a tuple whose first item names its kind)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(data)) + data)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None once the other side has closed."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        message: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return message


def worker_main(
    sock: socket.socket,
    policy: PolicySpec | PolicyFactory,
    config: CollectConfig,
    tools: ToolServerSpec | None,
    profile: Path | None,
) -> None:
    """A worker process: serve jobs until the driver says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops the workers
    # The event loop thread's CPU time, not wall time: waits (for the GIL, for the driver) are not work.
    profiler = cProfile.Profile(time.thread_time) if profile is not None else None
    if profiler is not None:
        profiler.enable()
    try:
        asyncio.run(_serve(sock, policy, config, tools))
    finally:
        if profiler is not None and profile is not None:
            profiler.disable()
            profile.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(profile.with_name(f"{profile.name}-{os.getpid()}.prof"))


async def _serve(
    sock: socket.socket, recipe: PolicySpec | PolicyFactory, config: CollectConfig, spec: ToolServerSpec | None
) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    running: set[asyncio.Task[None]] = set()
    try:
        tools_client = synthetic_tools(config) if spec is None else ToolClient(spec=spec)
        async with (
            tools_client as tools,
            Collector(policy=build_policy(recipe, tools), tools=tools, config=config) as collector,
        ):
            await send(writer, ("ready", collector.policy_info))
            while (message := await receive(reader)) is not None and message[0] != "stop":
                if message[0] == "cpu":
                    await send(writer, ("cpu", time.process_time()))
                    continue
                task = asyncio.create_task(_run_job(collector, writer, message[1], message[2]))
                running.add(task)
                task.add_done_callback(running.discard)
            for task in list(running):  # the driver went away: stop, the checkpoints stay consistent
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    except Exception as exc:
        with contextlib.suppress(ConnectionError):  # else the driver is gone: nobody to tell
            await send(writer, ("fatal", f"{type(exc).__name__}: {exc}"))
    finally:
        writer.close()


async def _run_job(collector: Collector, writer: asyncio.StreamWriter, key: int, job: Job) -> None:
    try:
        record = await collector.run(job)
    except Exception as exc:
        await send(writer, ("failed", key, is_outage(exc), f"{type(exc).__name__}: {exc}"))
        return
    await send(writer, ("record", key, record))
