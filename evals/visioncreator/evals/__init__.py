"""visioncreator.evals."""
