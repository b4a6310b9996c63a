"""Fakes for fault injection only (a flaky chat server...); everything else in the tests is real."""
