"""visioncreator.policy."""
