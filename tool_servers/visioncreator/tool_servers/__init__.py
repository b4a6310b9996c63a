"""visioncreator.tool_servers: MCP image tools, their back ends and the image-handle store.

Other packages use this face, and the public subpackage :mod:`visioncreator.tool_servers.synthetic`
(the synthetic world: scenes, ground truth, checklists, the verifier, the vocabulary). Importing
the package is cheap: the MCP server (which pulls in the MCP SDK) loads on first use of
``build_server``, ``main`` or ``serve_http``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visioncreator.tool_servers.backend import Generated, ImageBackend, SourceImage
from visioncreator.tool_servers.decode import decode_image, sniff_format
from visioncreator.tool_servers.detectors import DetectorSettings, analyse_image
from visioncreator.tool_servers.errors import (
    CorruptImageError,
    ImageTooLargeError,
    LimitExceededError,
    ToolInputError,
    ToolServerError,
    UnknownHandleError,
    UnsupportedImageError,
)
from visioncreator.tool_servers.names import (
    IMAGE_TOOLS,
    INSPECTION_META_KEY,
    INTERNAL_TOOLS,
    LOOK_META_KEY,
    POLICY_TOOLS,
    SERVER_NAME,
    ToolName,
)
from visioncreator.tool_servers.schemas import (
    HANDLE_PATTERN,
    EditImageInput,
    ImageAnalysis,
    ImageResult,
    InspectImageInput,
    InspectResult,
    ReferenceToImageInput,
    TextToImageInput,
    UploadImageInput,
)
from visioncreator.tool_servers.settings import ServerSettings
from visioncreator.tool_servers.store import TRUTH_KEY, ImageStore, StoredImage

if TYPE_CHECKING:
    from visioncreator.tool_servers.cli import main
    from visioncreator.tool_servers.http import serve_http
    from visioncreator.tool_servers.server import build_server

__all__ = [
    "HANDLE_PATTERN",
    "IMAGE_TOOLS",
    "INSPECTION_META_KEY",
    "INTERNAL_TOOLS",
    "LOOK_META_KEY",
    "POLICY_TOOLS",
    "SERVER_NAME",
    "TRUTH_KEY",
    "CorruptImageError",
    "DetectorSettings",
    "EditImageInput",
    "Generated",
    "ImageAnalysis",
    "ImageBackend",
    "ImageResult",
    "ImageStore",
    "ImageTooLargeError",
    "InspectImageInput",
    "InspectResult",
    "LimitExceededError",
    "ReferenceToImageInput",
    "ServerSettings",
    "SourceImage",
    "StoredImage",
    "TextToImageInput",
    "ToolInputError",
    "ToolName",
    "ToolServerError",
    "UnknownHandleError",
    "UnsupportedImageError",
    "UploadImageInput",
    "analyse_image",
    "build_server",
    "decode_image",
    "main",
    "serve_http",
    "sniff_format",
]

_LAZY = {"build_server": "server", "main": "cli", "serve_http": "http"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"visioncreator.tool_servers.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
