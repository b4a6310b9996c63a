"""Images the detector tests draw."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def text_image(text: str, size: tuple[int, int] = (640, 200), at: tuple[int, int] = (20, 60)) -> Image.Image:
    """Black text in a large font on white."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text(at, text, fill="black", font=ImageFont.load_default(size=48))
    return image


def squash(text: str) -> str:
    """Text without spaces: the packaged PP-OCR model often drops the space between words."""
    return text.replace(" ", "")
