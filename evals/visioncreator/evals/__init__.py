"""visioncreator.evals: task suites with checklists, scorers and judges, the eval runner, reports.

``visioncreator eval --suite FILE --out DIR`` runs a suite (see ``docs/suites.md``);
:func:`run_eval` is the same from Python, :func:`write_report` and :func:`compare_runs` the report
and the comparison of two run folders. Heavy packages (matplotlib, the detectors) load lazily.
"""

from visioncreator.evals.errors import EvalsError, EvalSettingsError
from visioncreator.evals.judge import (
    JudgeAnswer,
    JudgeCache,
    JudgeClient,
    JudgeConnectionError,
    JudgeError,
    JudgeHTTPError,
    JudgeParseError,
    JudgeRequest,
    JudgeSettings,
    VisionJudge,
    checklist_question,
    reason_pattern,
    yes_no_model,
)
from visioncreator.evals.reflection import classify_reflections, reflection_distribution
from visioncreator.evals.report import ReportError, Summary, compare_runs, summarize, write_report
from visioncreator.evals.results import JudgeScore, ReflectionRecord, RunInfo, TaskCost, TaskError, TaskResult
from visioncreator.evals.runner import EvalOutcome, run_eval
from visioncreator.evals.settings import EvalSettings
from visioncreator.evals.suites import (
    InputImage,
    SuiteError,
    SuiteLoad,
    SuiteTask,
    build_synthetic_suite,
    by_split,
    input_scene,
    load_any_suite,
    load_gedit,
    load_geneval,
    load_suite,
    load_suite_checked,
    materialize_input,
    write_suite,
)

__all__ = [
    "EvalOutcome",
    "EvalSettings",
    "EvalSettingsError",
    "EvalsError",
    "InputImage",
    "JudgeAnswer",
    "JudgeCache",
    "JudgeClient",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeHTTPError",
    "JudgeParseError",
    "JudgeRequest",
    "JudgeScore",
    "JudgeSettings",
    "ReflectionRecord",
    "ReportError",
    "RunInfo",
    "SuiteError",
    "SuiteLoad",
    "SuiteTask",
    "Summary",
    "TaskCost",
    "TaskError",
    "TaskResult",
    "VisionJudge",
    "build_synthetic_suite",
    "by_split",
    "checklist_question",
    "classify_reflections",
    "compare_runs",
    "input_scene",
    "load_any_suite",
    "load_gedit",
    "load_geneval",
    "load_suite",
    "load_suite_checked",
    "materialize_input",
    "reason_pattern",
    "reflection_distribution",
    "run_eval",
    "summarize",
    "write_report",
    "write_suite",
    "yes_no_model",
]
