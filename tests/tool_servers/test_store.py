from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from visioncreator.tool_servers.errors import ImageTooLargeError, UnknownHandleError, UnsupportedImageError
from visioncreator.tool_servers.scene import GroundTruth, Scene, SceneObject
from visioncreator.tool_servers.schemas import HANDLE_PATTERN
from visioncreator.tool_servers.store import TRUTH_KEY, ImageStore


def _image(color: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def _truth(width: int = 64, height: int = 48, prompt: str = "a blue dog") -> GroundTruth:
    dog = SceneObject(id=0, kind="dog", color="blue", box=(1, 2, 30, 40), identity="dog/blue/plain")
    return GroundTruth(scene=Scene(width=width, height=height, objects=(dog,)), tool="text_to_image", prompt=prompt)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def test_put_is_deterministic_and_content_addressed(store: ImageStore, tmp_path: Path) -> None:
    first = store.put(_image(), _truth())
    again = store.put(_image(), _truth())
    other_store = ImageStore(tmp_path / "other")
    elsewhere = other_store.put(_image(), _truth())
    assert re.fullmatch(HANDLE_PATTERN, first.handle)
    assert first == again == elsewhere
    assert store.read_bytes(first.handle) == other_store.read_bytes(first.handle)
    # Truth is part of the content: other truth, other handle; other pixels, other handle.
    assert store.put(_image(), _truth(prompt="a dog")).handle != first.handle
    assert store.put(_image(), None).handle != first.handle
    assert store.put(_image((0, 0, 0)), _truth()).handle != first.handle


def test_files_live_under_a_two_hex_fan_out_and_no_temp_files_remain(store: ImageStore) -> None:
    stored = store.put(_image())
    store.put(_image())
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [store.root / stored.handle[4:6] / f"{stored.handle}.png"]
    assert store.path_of(stored.handle) == files[0]


def test_get_load_and_truth_round_trip(store: ImageStore) -> None:
    stored = store.put(_image(), _truth())
    fresh = ImageStore(store.root)  # a second process sharing the directory
    got, pixels = fresh.load(stored.handle)
    assert got == stored
    assert (got.width, got.height, got.mime_type) == (64, 48, "image/png")
    assert got.bytes == len(fresh.read_bytes(stored.handle))
    assert pixels.getpixel((5, 5)) == (10, 120, 200)
    assert fresh.truth(stored.handle) == _truth()
    assert fresh.exists(stored.handle)
    assert fresh.truth(store.put(_image((1, 1, 1))).handle) is None


def test_written_out_png_keeps_its_truth_when_uploaded_again(store: ImageStore, tmp_path: Path) -> None:
    stored = store.put(_image(), _truth())
    other = ImageStore(tmp_path / "other")
    uploaded = other.put_bytes(store.read_bytes(stored.handle))
    assert uploaded.handle == stored.handle
    assert uploaded.truth == _truth()


def test_upload_of_jpeg_is_reencoded_as_png_without_truth(store: ImageStore) -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG")
    stored = store.put_bytes(buffer.getvalue())
    assert stored.truth is None
    assert store.read_bytes(stored.handle).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "text",
    ["not json", '{"scene": 1}', _truth(width=999).model_dump_json()],
    ids=["garbage", "invalid-model", "size-mismatch"],
)
def test_invalid_embedded_truth_is_dropped(store: ImageStore, text: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(TRUTH_KEY, text)
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG", pnginfo=info)
    stored = store.put_bytes(buffer.getvalue())
    assert stored.truth is None
    assert stored.handle == store.put(_image()).handle


def test_put_bytes_enforces_limits(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s", max_input_bytes=1000, max_decoded_pixels=100)
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    with pytest.raises(ImageTooLargeError, match="max_decoded_pixels 100"):
        store.put_bytes(buffer.getvalue())
    with pytest.raises(ImageTooLargeError, match="max_input_bytes 1000"):
        store.put_bytes(buffer.getvalue() + b"\0" * 2000)
    with pytest.raises(UnsupportedImageError):
        store.put_bytes(b"#!/bin/sh\necho hi\n")


@pytest.mark.parametrize(
    "handle",
    [
        "../../etc/passwd",
        "img_../../../etc/passwd",
        "img_" + "A" * 24,
        "img_" + "a" * 23,
        "img_" + "a" * 25,
        "img_" + "a" * 24 + "\n",
        "/tmp/img_" + "a" * 24,
        "",
    ],
)
def test_malformed_handles_never_touch_the_filesystem(store: ImageStore, handle: str) -> None:
    assert not store.exists(handle)
    for method in (store.get, store.read_bytes, store.truth, store.path_of):
        with pytest.raises(UnknownHandleError, match="unknown image handle"):
            method(handle)


def test_unknown_handle_says_what_to_do(store: ImageStore) -> None:
    handle = "img_" + "0" * 24
    assert not store.exists(handle)
    with pytest.raises(UnknownHandleError, match=f"unknown image handle {handle}: call text_to_image first"):
        store.get(handle)
    assert isinstance(UnknownHandleError(handle), LookupError)
