"""Drawing: a ``Scene`` becomes pixels.

Drawing uses only ``ImageDraw`` primitives and a cached bitmap font, so a 256x256 image
takes about a millisecond. Each kind is drawn as the shape of its family, filled with its
colour and pattern, and labelled.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Final

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from visioncreator.tool_servers.scene import Box, Scene, SceneObject
from visioncreator.tool_servers.synthetic.layout import banner_height, pattern_of
from visioncreator.tool_servers.synthetic.vocab import COLORS

__all__ = ["draw"]

_RGB = tuple[int, int, int]

# Shape families: the kinds each is drawn for; everything else is drawn as a diamond.
_FAMILIES: Final[dict[str, frozenset[str]]] = {
    "person": frozenset({"person"}),
    "animal": frozenset(
        {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "teddy bear"}
    ),
    "vehicle": frozenset({"bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "skateboard"}),
    "food": frozenset(
        {"banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"}
    ),
    "furniture": frozenset({"bench", "chair", "couch", "bed", "dining table", "toilet", "sink"}),
    "device": frozenset(
        {"tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "refrigerator"}
    ),
    "vessel": frozenset({"bottle", "wine glass", "cup", "bowl", "vase", "potted plant"}),
    "sign": frozenset({"traffic light", "fire hydrant", "stop sign", "parking meter", "clock"}),
}
_FAMILY_OF: Final[dict[str, str]] = {kind: family for family, kinds in _FAMILIES.items() for kind in kinds}


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    # The bitmap font draws ten times faster than the default FreeType one.
    return ImageFont.load_default_imagefont()


def _rgb(color: str) -> _RGB:
    return COLORS.get(color, (128, 128, 128))


def _luma(rgb: _RGB) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _contrast(rgb: _RGB) -> _RGB:
    """A shade of the same colour that stands out against it (for patterns)."""
    if _luma(rgb) > 110:
        return (rgb[0] * 5 // 10, rgb[1] * 5 // 10, rgb[2] * 5 // 10)
    return ((rgb[0] + 255) // 2, (rgb[1] + 255) // 2, (rgb[2] + 255) // 2)


def draw(scene: Scene, base: Image.Image | None = None) -> Image.Image:
    """Render a scene. Deterministic: the same scene gives the same pixels.

    Args:
        scene: What to draw.
        base: Pixels to draw over instead of the scene's background (an uploaded image being
            edited); it is resized to the scene's size and not modified.

    Returns:
        An RGB image of the scene's size.

    """
    size = (scene.width, scene.height)
    if base is None:
        image = Image.new("RGB", size, _rgb(scene.background))
    else:
        image = base.convert("RGB")
        image = image.resize(size) if image.size != size else image.copy()
    canvas = ImageDraw.Draw(image)
    outline_width = 3 if scene.style == "cartoon" else 1
    label_fill: _RGB = (255, 255, 255) if _luma(_rgb(scene.background)) < 110 else (0, 0, 0)
    for obj in scene.objects:
        _draw_object(canvas, obj, outline_width, label_fill)
    if scene.text:
        bh = banner_height(scene.height)
        canvas.rectangle((0, scene.height - bh, scene.width, scene.height), fill=(255, 255, 255))
        _draw_banner_text(image, scene.text, bh)
    return _stylise(image, scene.style)


def _draw_banner_text(image: Image.Image, text: str, banner: int) -> None:
    """Write the text large enough to read: the bitmap font scaled up by a whole factor."""
    font = _font()
    left, top, right, bottom = font.getbbox(text)
    w, h = max(1, right - left), max(1, bottom - top)
    scale = max(1, min((banner - 4) // h, (image.width - 8) // w))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    if scale > 1:
        mask = mask.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    x = max(2, (image.width - mask.width) // 2)
    y = image.height - banner + (banner - mask.height) // 2
    image.paste((0, 0, 0), (x, y), mask)


def _draw_object(canvas: ImageDraw.ImageDraw, obj: SceneObject, outline_width: int, label_fill: _RGB) -> None:
    x0, y0, x1, y1 = obj.box
    label_h = 11 if y1 - y0 >= 34 else 0
    body: Box = (x0, y0, x1, y1 - label_h)
    fill = _rgb(obj.color)
    edge: _RGB = (0, 0, 0) if outline_width > 1 else _contrast(fill)
    inner = _SHAPES.get(_FAMILY_OF.get(obj.kind, ""), _diamond)(canvas, body, fill, edge, outline_width)
    _pattern(canvas, inner, pattern_of(obj), _contrast(fill))
    if label_h:
        chars = max(3, (x1 - x0) // 6)
        canvas.text((x0, y1 - label_h), obj.kind[:chars], fill=label_fill, font=_font())


def _person(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    cx, bw, bh = (x0 + x1) // 2, x1 - x0, y1 - y0
    r = max(2, min(bw, bh) // 6)
    canvas.ellipse((cx - r, y0, cx + r, y0 + 2 * r), fill=fill, outline=edge, width=w)
    torso = (cx - bw // 4, y0 + 2 * r, cx + bw // 4, y1)
    canvas.rectangle(torso, fill=fill, outline=edge, width=w)
    return torso


def _animal(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    body = (x0, y0 + bh // 4, x1 - bw // 4, y1 - bh // 5)
    for lx in (x0 + bw // 6, x1 - bw // 2.5):
        canvas.line((lx, body[3] - 1, lx, y1), fill=edge, width=max(w, 2))
    canvas.ellipse(body, fill=fill, outline=edge, width=w)
    r = max(2, min(bw, bh) // 5)
    canvas.ellipse((x1 - 2 * r, y0, x1, y0 + 2 * r), fill=fill, outline=edge, width=w)
    return (body[0] + bw // 6, body[1] + bh // 8, body[2] - bw // 6, body[3] - bh // 8)


def _vehicle(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    r = max(2, min(bw // 6, bh // 4))
    body = (x0, y0 + bh // 5, x1, y1 - r)
    canvas.rounded_rectangle(body, radius=max(1, min(bw, bh) // 8), fill=fill, outline=edge, width=w)
    for cx in (x0 + bw // 4, x1 - bw // 4):
        canvas.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=(30, 30, 30))
    return (body[0] + 2, body[1] + 2, body[2] - 2, body[3] - r)


def _food(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    canvas.ellipse(b, fill=fill, outline=edge, width=w)
    mx, my = (x1 - x0) * 3 // 20, (y1 - y0) * 3 // 20
    return (x0 + mx, y0 + my, x1 - mx, y1 - my)


def _furniture(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    top = (x0, y0, x1, y0 + bh * 3 // 5)
    for lx in (x0 + bw // 10, x1 - bw // 10):
        canvas.line((lx, top[3], lx, y1), fill=edge, width=max(w, 2))
    canvas.rectangle(top, fill=fill, outline=edge, width=w)
    return top


def _device(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    canvas.rectangle(b, fill=fill, outline=edge, width=w)
    mx, my = (x1 - x0) // 6, (y1 - y0) // 6
    canvas.rectangle((x0 + mx, y0 + my, x1 - mx, y0 + 2 * my), fill=(20, 20, 30))
    return (x0 + mx, y0 + 3 * my, x1 - mx, y1 - my)


def _vessel(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    bw = x1 - x0
    canvas.polygon(((x0, y0), (x1, y0), (x1 - bw // 5, y1), (x0 + bw // 5, y1)), fill=fill, outline=edge, width=w)
    return (x0 + bw // 4, y0 + 2, x1 - bw // 4, y1 - 2)


def _sign(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    cx, bw, bh = (x0 + x1) // 2, x1 - x0, y1 - y0
    head = (x0, y0, x1, y0 + bh * 2 // 3)
    canvas.line((cx, head[3], cx, y1), fill=(90, 90, 90), width=max(2, bw // 10))
    canvas.regular_polygon(((x0 + x1) / 2, (head[1] + head[3]) / 2, min(bw, head[3] - y0) / 2), 8, fill=fill)
    m = min(bw, bh) // 5
    return (cx - m, head[1] + m, cx + m, head[3] - m)


def _diamond(canvas: ImageDraw.ImageDraw, b: Box, fill: _RGB, edge: _RGB, w: int) -> Box:
    x0, y0, x1, y1 = b
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    canvas.polygon(((cx, y0), (x1, cy), (cx, y1), (x0, cy)), fill=fill, outline=edge, width=w)
    return ((x0 + cx) // 2, (y0 + cy) // 2, (x1 + cx) // 2, (y1 + cy) // 2)


_Shape = Callable[[ImageDraw.ImageDraw, Box, _RGB, _RGB, int], Box]
_SHAPES: Final[dict[str, _Shape]] = {
    "person": _person,
    "animal": _animal,
    "vehicle": _vehicle,
    "food": _food,
    "furniture": _furniture,
    "device": _device,
    "vessel": _vessel,
    "sign": _sign,
}


def _pattern(canvas: ImageDraw.ImageDraw, b: Box, pattern: str, ink: _RGB) -> None:
    """Draw an identity pattern inside box ``b`` (the inside of a shape's body)."""
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    if bw < 4 or bh < 4 or pattern == "plain":
        return
    step = max(3, min(bw, bh) // 3)
    if pattern == "striped":
        for x in range(x0 + step // 2, x1, step):
            canvas.line((x, y0, x, y1), fill=ink, width=max(1, step // 3))
    elif pattern == "dotted":
        r = max(1, step // 4)
        for y in range(y0 + step // 2, y1, step):
            for x in range(x0 + step // 2, x1, step):
                canvas.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    elif pattern == "checked":
        half = max(2, step // 2)
        for j, y in enumerate(range(y0, y1 - 1, half)):
            for i, x in enumerate(range(x0, x1 - 1, half)):
                if (i + j) % 2 == 0:
                    canvas.rectangle((x, y, min(x + half, x1) - 1, min(y + half, y1) - 1), fill=ink)
    elif pattern == "ringed":
        for k in range(0, min(bw, bh) // 2, step // 2 + 1):
            canvas.ellipse((x0 + k, y0 + k, x1 - k, y1 - k), outline=ink, width=1)
    elif pattern == "split":
        canvas.rectangle(((x0 + x1) // 2, y0, x1, y1), fill=ink)


def _stylise(image: Image.Image, style: str) -> Image.Image:
    """A cheap post-process that makes each style look different."""
    if style == "sketch":
        edges = image.convert("L").filter(ImageFilter.FIND_EDGES)
        return ImageOps.invert(edges).convert("RGB")
    if style == "pixel_art":
        w, h = image.size
        small = image.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.NEAREST)
        return small.resize((w, h), Image.Resampling.NEAREST)
    if style == "watercolor":
        w, h = image.size
        half = image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
        soft = half.filter(ImageFilter.BoxBlur(1)).resize((w, h), Image.Resampling.BILINEAR)
        return ImageOps.posterize(soft, 3)
    if style == "oil_painting":
        # A true mode filter costs ~70 ms at 256x256; posterised, enhanced strokes cost ~2 ms.
        return ImageOps.posterize(image.filter(ImageFilter.BoxBlur(1)), 4).filter(ImageFilter.EDGE_ENHANCE)
    return image
