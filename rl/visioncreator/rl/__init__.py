"""visioncreator.rl."""
