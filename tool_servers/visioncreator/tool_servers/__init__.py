"""visioncreator.tool_servers."""
