"""Several reference images tiled into one, for models that take a single input image."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageOps

__all__ = ["tile_references"]


def tile_references(images: Sequence[Image.Image], width: int, height: int) -> Image.Image:
    """Tile 1-4 images into one RGB image of ``width`` x ``height``.

    One image fills the canvas, two sit side by side, three or four fill a 2x2 grid (with
    three, the first image fills the fourth cell too, so no cell is blank). Each image is
    scaled and centre-cropped to its cell, so nothing is stretched.

    Raises:
        ValueError: No image, or more than four.

    """
    if not 1 <= len(images) <= 4:
        raise ValueError(f"tile_references takes 1 to 4 images, got {len(images)}")
    half_w, half_h = width // 2, height // 2
    cells: list[tuple[int, int, int, int]]
    if len(images) == 1:
        cells = [(0, 0, width, height)]
    elif len(images) == 2:
        cells = [(0, 0, half_w, height), (half_w, 0, width - half_w, height)]
    else:
        cells = [
            (0, 0, half_w, half_h),
            (half_w, 0, width - half_w, half_h),
            (0, half_h, half_w, height - half_h),
            (half_w, half_h, width - half_w, height - half_h),
        ]
    sources = list(images) + [images[0]] * (len(cells) - len(images))
    canvas = Image.new("RGB", (width, height))
    for image, (x, y, cell_w, cell_h) in zip(sources, cells, strict=True):
        canvas.paste(ImageOps.fit(image.convert("RGB"), (cell_w, cell_h)), (x, y))
    return canvas
