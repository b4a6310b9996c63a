"""visioncreator.graph."""
