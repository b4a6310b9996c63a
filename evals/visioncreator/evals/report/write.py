"""Write a run's report: ``summary.json``, ``plots/*.png``, ``thumbs/*.png`` and ``report.html``.

The page refers to the run's images by paths relative to the run folder and embeds its plots as
data URIs, so it works opened from disk and after the folder is moved.
"""

from __future__ import annotations

from pathlib import Path

from visioncreator.evals.report.html import render_report
from visioncreator.evals.report.images import image_refs
from visioncreator.evals.report.plots import write_plots
from visioncreator.evals.report.summary import (
    existing_run_dir,
    read_errors,
    read_run,
    read_task_results,
    summarize_results,
)

__all__ = ["PLOTS_DIR", "REPORT_FILE", "SUMMARY_FILE", "write_report"]

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"


def write_report(run_dir: str | Path) -> Path:
    """Write ``summary.json``, ``plots/``, ``thumbs/`` and ``report.html`` into a run folder.

    Args:
        run_dir: A run folder written by ``visioncreator eval``.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: The folder is missing or one of its records does not parse.

    """
    run = existing_run_dir(run_dir)
    results = read_task_results(run)
    errors = read_errors(run)
    summary = summarize_results(results, errors=errors, run=read_run(run))
    (run / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
    plots = write_plots(summary, results, run / PLOTS_DIR)
    handles = [h for r in results for h in (*r.inputs, *r.answer, *(x.image for x in r.reflections if x.image))]
    # A task that failed (an outage, a crash) and then finished on a re-run is not an error any more.
    done = {r.id for r in results}
    open_errors = [e for e in errors if e.id not in done or e.stage == "load"]
    page = render_report(summary, results, open_errors, refs=image_refs(run, handles), plots=plots)
    out = run / REPORT_FILE
    out.write_text(page)
    return out
