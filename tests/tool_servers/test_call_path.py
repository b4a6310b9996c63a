"""The cheap call path: write-behind storage, recent images in memory, truth read without pixels.

Faults are injected only to hold a write back (a slow disk) or to make any pixel decode fail,
which proves a path never decodes.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from visioncreator.tool_servers import store as store_module
from visioncreator.tool_servers import writes as writes_module
from visioncreator.tool_servers.budget import PixelLRU
from visioncreator.tool_servers.decode import decode_image, encode_png, read_png_text
from visioncreator.tool_servers.errors import UnknownHandleError
from visioncreator.tool_servers.scene import GroundTruth, Scene, SceneObject
from visioncreator.tool_servers.store import TRUTH_KEY, ImageStore

WAIT_S = 10.0


def _image(color: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.putpixel((3, 4), (255, 0, 0))
    return image


def _truth(width: int = 64, height: int = 48) -> GroundTruth:
    dog = SceneObject(id=0, kind="dog", color="blue", box=(1, 2, 30, 40), identity="dog/blue/plain")
    return GroundTruth(scene=Scene(width=width, height=height, objects=(dog,)), tool="text_to_image", prompt="a dog")


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Writes wait until the event is set (a disk that is slow to take them)."""
    release = threading.Event()
    real = writes_module.write_atomic

    def held(path: Path, data: bytes, root: Path) -> None:
        assert release.wait(WAIT_S), "the test never released the write"
        real(path, data, root)

    monkeypatch.setattr(writes_module, "write_atomic", held)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode by the store fails the test."""

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise AssertionError("the store decoded pixels")

    monkeypatch.setattr(store_module, "decode_image", refuse)


def test_put_behind_answers_before_the_file_and_serves_it_meanwhile(tmp_path: Path, slow_disk: threading.Event) -> None:
    store = ImageStore(tmp_path / "store")
    stored = store.put_behind(_image(), _truth())
    path = store.path_of(stored.handle)
    assert stored.bytes is None
    assert not path.exists()
    # Another store over the same directory in this process sees the pending image.
    reader = ImageStore(tmp_path / "store")
    assert reader.exists(stored.handle)
    data = reader.read_bytes(stored.handle)
    assert data == encode_png(_image(), (TRUTH_KEY, _truth().model_dump_json().encode()))
    assert reader.truth(stored.handle) == _truth()
    slow_disk.set()
    store.flush(WAIT_S)
    assert path.read_bytes() == data
    # The same content stored synchronously has the same handle and now knows its size.
    assert store.put(_image(), _truth()) == ImageStore(tmp_path / "other").put(_image(), _truth())
    assert store.put(_image(), _truth()).bytes == len(data)


def test_handles_are_the_same_in_another_process_and_after_a_round_trip(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    handle = store.put_behind(_image(), _truth()).handle
    store.flush(WAIT_S)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from visioncreator.tool_servers.store import ImageStore\n"
        "from visioncreator.tool_servers.scene import GroundTruth, Scene, SceneObject\n"
        "image = Image.new('RGB', (64, 48), (10, 120, 200)); image.putpixel((3, 4), (255, 0, 0))\n"
        "dog = SceneObject(id=0, kind='dog', color='blue', box=(1, 2, 30, 40), identity='dog/blue/plain')\n"
        "truth = GroundTruth(scene=Scene(width=64, height=48, objects=(dog,)), tool='text_to_image', prompt='a dog')\n"
        "print(ImageStore(Path(sys.argv[1])).put(image, truth).handle)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "elsewhere")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert other.stdout.strip() == handle
    # Written out and uploaded again: same pixels, same truth, same handle.
    uploaded = ImageStore(tmp_path / "third").put_bytes(store.read_bytes(handle))
    assert (uploaded.handle, uploaded.truth) == (handle, _truth())


def test_truth_and_metadata_of_a_file_never_decode_pixels(tmp_path: Path, no_decoding: None) -> None:
    stored = ImageStore(tmp_path / "store").put(_image(), _truth())
    fresh = ImageStore(tmp_path / "store")  # nothing in memory: reads the file
    assert fresh.truth(stored.handle) == _truth()
    assert fresh.get(stored.handle) == stored
    assert fresh.dimensions(stored.handle) == (64, 48)


def test_a_recent_image_is_served_from_memory_as_a_copy(tmp_path: Path, no_decoding: None) -> None:
    store = ImageStore(tmp_path / "store")
    stored = store.put_behind(_image(), _truth())
    got, pixels = store.load(stored.handle)
    assert got.truth == _truth()
    assert pixels.tobytes() == _image().tobytes()
    pixels.putpixel((0, 0), (1, 2, 3))  # the caller's copy: the stored image does not change
    assert store.load(stored.handle)[1].getpixel((0, 0)) == (10, 120, 200)
    store.flush(WAIT_S)


def test_without_a_cache_a_stored_file_is_decoded_with_its_truth(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", cache_pixels=0)
    stored = store.put(_image(), _truth())
    assert store.recent(stored.handle) is None
    got, pixels = store.load(stored.handle)
    assert (got.truth, pixels.tobytes()) == (_truth(), _image().tobytes())


def test_files_written_by_pillow_keep_their_truth(tmp_path: Path) -> None:
    """Files of earlier versions (Pillow's encoder, zipped iTXt) still give their truth without a decode."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(TRUTH_KEY, _truth().model_dump_json(), zip=True)
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG", pnginfo=info)
    assert read_png_text(buffer.getvalue(), TRUTH_KEY, 1 << 20) == _truth().model_dump_json().encode()
    assert read_png_text(buffer.getvalue(), TRUTH_KEY, 10) is None  # longer than allowed
    assert read_png_text(b"\x89PNG\r\n\x1a\n\x00\x00", TRUTH_KEY, 1 << 20) is None


def test_our_png_decodes_with_the_safe_decoder_to_the_same_pixels_and_text() -> None:
    data = encode_png(_image(size=(33, 7)), (TRUTH_KEY, b'{"x": 1}'))
    decoded = decode_image(data, max_bytes=1 << 20, max_pixels=1 << 20, allowed=("PNG",))
    assert decoded.tobytes() == _image(size=(33, 7)).tobytes()
    assert decoded.info[TRUTH_KEY] == '{"x": 1}'
    with pytest.raises(ValueError, match="RGB"):
        encode_png(Image.new("L", (4, 4)))


def test_recent_images_are_bounded_by_pixels() -> None:
    lru: PixelLRU[str] = PixelLRU(100)
    lru.put("a", 40, "A")
    lru.put("b", 40, "B")
    assert lru.get("a") == "A"  # now the most recent
    lru.put("c", 40, "C")  # 120 > 100: the least recent (b) goes
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ("A", None, "C")
    lru.put("huge", 101, "H")
    assert lru.get("huge") is None


def test_a_file_planted_as_a_link_is_never_read(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    stored = store.put(_image())
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    path = store.path_of(stored.handle)
    path.unlink()
    path.symlink_to(secret)
    fresh = ImageStore(tmp_path / "store", cache_pixels=0)
    with pytest.raises(UnknownHandleError):
        fresh.read_bytes(stored.handle)
    assert not fresh.exists(stored.handle)


def test_a_write_behind_through_a_shard_swapped_for_a_link_stays_in_the_root(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    handle = store.put(_image()).handle
    store.path_of(handle)  # the shard exists now: this check is remembered
    shard = store.root / handle[4:6]
    # The shard was checked once; then it is swapped for a link to somewhere else.
    outside = tmp_path / "outside"
    outside.mkdir()
    (shard / f"{handle}.png").unlink()
    shard.rmdir()
    shard.symlink_to(outside, target_is_directory=True)
    store.put_behind(_image())
    store.flush(WAIT_S)
    assert list(outside.iterdir()) == []
