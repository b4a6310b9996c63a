"""Every limit of the tool server: over it, the caller gets a tool error naming the limit, and
the server still answers the next good call. Plus admission control (max_queue) and the CLI
flags that set the limits."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent
from PIL import Image

from visioncreator.tool_servers.backend import Generated
from visioncreator.tool_servers.cli import _parser, _settings
from visioncreator.tool_servers.schemas import EditImageInput, ReferenceToImageInput, TextToImageInput
from visioncreator.tool_servers.server import build_server
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend

GOOD: dict[str, Any] = {"prompt": "a red dog", "width": 64, "height": 64, "seed": 1}


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encoded(side: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 60).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(10):
        return await client.call_tool(tool, arguments)


async def _refused_then_served(client: Client, tool: str, arguments: dict[str, Any], phrase: str) -> None:
    bad = await _call(client, tool, arguments)
    assert bad.is_error, _text(bad)
    assert phrase in _text(bad), _text(bad)
    good = await _call(client, "text_to_image", GOOD)
    assert not good.is_error, _text(good)


async def _handle(client: Client) -> str:
    made = await _call(client, "text_to_image", GOOD)
    assert made.structured_content is not None
    return str(made.structured_content["handle"])


@pytest.mark.parametrize(
    ("overrides", "tool", "arguments", "phrase"),
    [
        ({"max_width": 128}, "text_to_image", {"width": 256}, "width 256 exceeds max_width 128"),
        ({"max_height": 128}, "text_to_image", {"height": 256}, "height 256 exceeds max_height 128"),
        ({"max_pixels": 10_000}, "text_to_image", {"width": 128, "height": 128}, "exceeds max_pixels 10000"),
        ({"max_steps": 20}, "text_to_image", {"steps": 21}, "steps 21 exceeds max_steps 20"),
        ({"max_steps": 20}, "edit_image", {"steps": 500}, "steps 500 exceeds max_steps 20"),
        ({"max_steps": 20}, "reference_to_image", {"steps": 30}, "steps 30 exceeds max_steps 20"),
        ({"max_width": 128}, "reference_to_image", {"width": 256}, "width 256 exceeds max_width 128"),
        ({"max_input_bytes": 2_000}, "upload_image", {"data": "PNG:96"}, "max_input_bytes 2000"),
        ({"max_decoded_pixels": 5_000}, "upload_image", {"data": "PNG:96"}, "max_decoded_pixels 5000"),
        ({"allowed_input_formats": ("PNG",)}, "upload_image", {"data": "JPEG:32"}, "allowed_input_formats"),
        ({"allowed_input_formats": ("JPEG", "WEBP")}, "upload_image", {"data": "PNG:32"}, "found PNG"),
        ({}, "upload_image", {"data": _b64(b"GIF89a" + b"\0" * 40)}, "allowed_input_formats"),
    ],
)
async def test_each_limit_is_a_tool_error_naming_it_and_the_server_keeps_serving(
    tmp_path: Path, overrides: dict[str, Any], tool: str, arguments: dict[str, Any], phrase: str
) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", **overrides)
    async with Client(build_server(settings)) as client:
        handle = await _handle(client)
        base: dict[str, Any] = {
            "text_to_image": {"prompt": "a dog", "width": 64, "height": 64},
            "edit_image": {"image": handle, "instruction": "make it blue"},
            "reference_to_image": {"prompt": "a dog", "references": [handle], "width": 64, "height": 64},
            "upload_image": {},
        }[tool]
        arguments = dict(arguments)
        if isinstance(arguments.get("data"), str) and ":" in arguments["data"]:
            fmt, side = arguments["data"].split(":")
            arguments["data"] = _b64(_encoded(int(side), fmt))
        await _refused_then_served(client, tool, {**base, **arguments}, phrase)


async def test_steps_within_max_steps_run() -> None:
    seen: list[tuple[int | None, float | None]] = []

    class Recording(SyntheticBackend):
        async def text_to_image(self, args: TextToImageInput) -> Generated:
            seen.append((args.steps, args.guidance))
            return await super().text_to_image(args)

    settings = ServerSettings(max_steps=20)
    async with Client(build_server(settings, backend=Recording())) as client:
        result = await _call(client, "text_to_image", {**GOOD, "steps": 20, "guidance": 4.5})
        assert not result.is_error, _text(result)
    # steps and guidance reach the back end unchanged.
    assert seen == [(20, 4.5)]


class _Gated(SyntheticBackend):
    """The real back end, held at a gate: calls start, then wait until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.running = 0
        self.most_running = 0
        self.started = 0
        self.two_started = anyio.Event()

    async def _hold(self) -> None:
        self.running += 1
        self.started += 1
        self.most_running = max(self.most_running, self.running)
        if self.started == 2:
            self.two_started.set()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1

    async def text_to_image(self, args: TextToImageInput) -> Generated:
        await self._hold()
        return await super().text_to_image(args)

    async def edit_image(self, args: EditImageInput, source: Any) -> Generated:
        await self._hold()
        return await super().edit_image(args, source)

    async def reference_to_image(self, args: ReferenceToImageInput, references: Any) -> Generated:
        await self._hold()
        return await super().reference_to_image(args, references)


async def test_queue_admits_capacity_plus_queue_and_refuses_the_rest_at_once(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", max_concurrency=1, max_queue=4)
    backend = _Gated()
    ok: list[CallToolResult] = []
    refused: list[tuple[CallToolResult, float]] = []
    all_refused = anyio.Event()

    async with Client(build_server(settings, backend=backend)) as client:

        async def one(seed: int) -> None:
            started = time.perf_counter()
            result = await client.call_tool("text_to_image", {**GOOD, "seed": seed})
            if result.is_error:
                refused.append((result, time.perf_counter() - started))
                if len(refused) == 27:
                    all_refused.set()
            else:
                ok.append(result)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for seed in range(32):
                    group.start_soon(one, seed)
                # The 27 refusals arrive while the gate is shut: before any accepted call can finish.
                await all_refused.wait()
                assert ok == []
                assert backend.running == 1
                backend.gate.set()

        assert len(ok) == 5
        assert len(refused) == 27
        for result, _ in refused:
            assert "max_queue 4" in _text(result), _text(result)
        assert max(seconds for _, seconds in refused) < 5
        assert backend.most_running == 1
        # Room again once the burst is over.
        good = await _call(client, "text_to_image", GOOD)
        assert not good.is_error, _text(good)


async def test_max_concurrency_bounds_calls_running_at_once(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", max_concurrency=2, max_queue=10)
    backend = _Gated()
    results: list[CallToolResult] = []
    async with Client(build_server(settings, backend=backend)) as client:

        async def one(seed: int) -> None:
            results.append(await client.call_tool("text_to_image", {**GOOD, "seed": seed}))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for seed in range(6):
                    group.start_soon(one, seed)
                await backend.two_started.wait()
                await anyio.sleep(0.1)  # room for a third call to slip through if the cap were broken
                assert backend.running == 2
                backend.gate.set()
    assert backend.most_running == 2
    assert len(results) == 6
    assert not any(result.is_error for result in results)


async def test_request_timeout_is_a_tool_error_and_the_server_keeps_serving(tmp_path: Path) -> None:
    settings = ServerSettings(store_root=tmp_path / "store", request_timeout_s=0.2)
    backend = _Gated()
    async with Client(build_server(settings, backend=backend)) as client:
        late = await _call(client, "text_to_image", GOOD)
        assert late.is_error
        assert "(request_timeout_s)" in _text(late)
        assert backend.running == 0  # the timed-out call was cancelled, not left running
        backend.gate.set()
        good = await _call(client, "text_to_image", GOOD)
        assert not good.is_error, _text(good)


def test_settings_defaults_and_descriptions_of_every_limit() -> None:
    settings = ServerSettings()
    assert settings.max_queue == 256
    # On for the synthetic back end: an answered handle survives a kill through its journaled recipe.
    assert settings.write_behind is None
    assert settings.writes_behind is True
    assert settings.max_steps == 50
    assert settings.allowed_input_formats == ("PNG", "JPEG", "WEBP")
    assert settings.backend == "synthetic"
    assert settings.diffusion.max_batch >= 1
    for name in ("max_queue", "max_steps", "allowed_input_formats", "max_concurrency", "request_timeout_s"):
        assert ServerSettings.model_fields[name].description, name
    with pytest.raises(ValueError, match="allowed_input_formats"):
        ServerSettings(allowed_input_formats=("GIF",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        ServerSettings(backend="dalle")  # type: ignore[arg-type]


def test_cli_flags_set_the_limits_and_the_backend_settings(tmp_path: Path) -> None:
    argv = ["--backend", "tiny", "--registry", str(tmp_path / "r.toml"), "--device", "cpu", "--dtype", "float32"]
    argv += ["--cpu-offload", "--max-batch", "3", "--batch-wait-ms", "5", "--max-steps", "12"]
    argv += ["--max-concurrency", "2", "--max-queue", "7", "--request-timeout", "9.5", "--write-behind"]
    settings = _settings(_parser().parse_args(argv))
    assert settings.backend == "tiny"
    assert settings.write_behind is True
    assert (settings.max_steps, settings.max_concurrency, settings.max_queue) == (12, 2, 7)
    assert settings.request_timeout_s == 9.5
    diffusion = settings.diffusion
    assert (diffusion.registry, diffusion.device, diffusion.dtype) == (tmp_path / "r.toml", "cpu", "float32")
    assert (diffusion.cpu_offload, diffusion.max_batch, diffusion.batch_wait_ms, diffusion.max_steps) == (
        True,
        3,
        5.0,
        12,
    )
    defaults = _settings(_parser().parse_args([]))
    assert defaults.model_dump(exclude={"store_root"}) == ServerSettings().model_dump(exclude={"store_root"})


@pytest.mark.parametrize("kind", ["tiny", "diffusers"])
def test_diffusion_backends_are_built_by_make_backend(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    import visioncreator.tool_servers.diffusion as diffusion

    calls: list[tuple[str, Any]] = []

    def record(name: str, settings: Any) -> SyntheticBackend:
        calls.append((name, settings))
        return SyntheticBackend()

    monkeypatch.setattr(diffusion, "make_backend", record)
    settings = ServerSettings(backend=kind)  # type: ignore[arg-type]
    settings = settings.model_copy(update={"diffusion": settings.diffusion.model_copy(update={"max_batch": 2})})
    build_server(settings)
    assert calls == [(kind, settings.diffusion)]
