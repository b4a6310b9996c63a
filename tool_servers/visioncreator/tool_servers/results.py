"""The MCP result of a tool call: structured output, its JSON as text, a link to a new image, a thumbnail."""

from __future__ import annotations

import json

from pydantic import BaseModel

from visioncreator.tool_servers.mcp_compat import (
    CallToolResult,
    ContentBlock,
    ImageContent,
    ResourceLink,
    TextContent,
    mcp_model,
)
from visioncreator.tool_servers.schemas import ImageResult

__all__ = ["tool_result"]


def tool_result(model: BaseModel, thumbnail: ImageContent | None) -> CallToolResult:
    """A tool result with structured output, its JSON as text, a link to a new image, and an optional thumbnail."""
    if isinstance(model, ImageResult):
        # ``changed`` appears only where a back end can tell (an edit): no null on every other result.
        structured = model.model_dump(mode="json", exclude={"changed"} if model.changed is None else None)
        link = mcp_model(
            ResourceLink,
            type="resource_link",
            name=model.handle,
            uri=model.uri,
            mime_type=model.mime_type,
            size=model.bytes,
        )
        content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(structured)), link]
    else:
        structured = model.model_dump(mode="json")
        content = [TextContent(type="text", text=json.dumps(structured))]
    if thumbnail is not None:
        content.append(thumbnail)
    return mcp_model(CallToolResult, content=content, structured_content=structured)
