"""Tests of visioncreator.evals."""
