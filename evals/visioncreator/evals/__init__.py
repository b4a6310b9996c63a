"""visioncreator.evals: task suites with checklists, scorers and judges, the eval runner, reports.

``visioncreator eval --suite FILE --out DIR`` runs a suite (see ``docs/suites.md``);
:func:`run_eval` is the same from Python, :func:`write_report` and :func:`compare_runs` the report
and the comparison of two run folders. Heavy packages (matplotlib, the detectors) load lazily.
"""

from visioncreator.evals.compare import compare_runs
from visioncreator.evals.judge import VisionJudge
from visioncreator.evals.loaders import load_any_suite, load_gedit, load_geneval
from visioncreator.evals.reflection import classify_reflections, reflection_distribution
from visioncreator.evals.report import Summary, summarize, write_report
from visioncreator.evals.results import JudgeScore, ReflectionRecord, RunInfo, TaskCost, TaskError, TaskResult
from visioncreator.evals.runner import EvalError, EvalOutcome, EvalSettings, run_eval
from visioncreator.evals.suite import InputImage, SuiteLoad, SuiteTask, load_suite, load_suite_checked

__all__ = [
    "EvalError",
    "EvalOutcome",
    "EvalSettings",
    "InputImage",
    "JudgeScore",
    "ReflectionRecord",
    "RunInfo",
    "SuiteLoad",
    "SuiteTask",
    "Summary",
    "TaskCost",
    "TaskError",
    "TaskResult",
    "VisionJudge",
    "classify_reflections",
    "compare_runs",
    "load_any_suite",
    "load_gedit",
    "load_geneval",
    "load_suite",
    "load_suite_checked",
    "reflection_distribution",
    "run_eval",
    "summarize",
    "write_report",
]
