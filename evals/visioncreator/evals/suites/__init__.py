"""Task suites: our JSONL files, GenEval and GEdit-Bench files, the built-in synthetic suite, input images."""

from __future__ import annotations

from visioncreator.evals.suites.inputs import ALLOW_OUTSIDE_FLAG, input_file, input_scene, materialize_input
from visioncreator.evals.suites.jsonl import (
    BUILTIN_SUITE,
    by_split,
    load_suite,
    load_suite_checked,
    parse_task_line,
    write_suite,
)
from visioncreator.evals.suites.loaders import (
    SuiteFormat,
    detect_format,
    geneval_task,
    load_any_suite,
    load_gedit,
    load_geneval,
)
from visioncreator.evals.suites.model import InputImage, SuiteError, SuiteLoad, SuiteTask
from visioncreator.evals.suites.synthetic import build_synthetic_suite, describe_edit

__all__ = [
    "ALLOW_OUTSIDE_FLAG",
    "BUILTIN_SUITE",
    "InputImage",
    "SuiteError",
    "SuiteFormat",
    "SuiteLoad",
    "SuiteTask",
    "build_synthetic_suite",
    "by_split",
    "describe_edit",
    "detect_format",
    "geneval_task",
    "input_file",
    "input_scene",
    "load_any_suite",
    "load_gedit",
    "load_geneval",
    "load_suite",
    "load_suite_checked",
    "materialize_input",
    "parse_task_line",
    "write_suite",
]
