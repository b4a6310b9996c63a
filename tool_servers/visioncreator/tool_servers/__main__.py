"""``python -m visioncreator.tool_servers``: run the MCP tool server (stdio by default)."""

from visioncreator.tool_servers.cli import main

if __name__ == "__main__":
    main()
