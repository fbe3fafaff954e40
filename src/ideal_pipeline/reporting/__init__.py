"""The comparison report over finished runs (`python -m ideal_pipeline.reporting`, see `cli`).

A run is one `kedro run` of the default pipeline: its parameters and its metrics
(`data/08_reporting/evaluate/metrics.json`, `baselines_metrics.json`, `timing/<stage>.json`).
Runs whose parameters differ only in `ideal.seed` (and thread counts) are seeds of one
configuration. The report writes `comparison.md`, `comparison.csv` (one row per configuration and
method), `comparison.png` (each configuration's accuracy, interval and seeds) and the per-stage
wall-clock table inside the Markdown.

- `runs`: the runs, from `dvc exp show --json`, from project copies and from the run record;
- `statistics`: configurations, their names, and mean, std and 95% interval over seeds;
- `suite`: the victim suite, its scores and each setting paired with the defaults;
- `render`: the Markdown table, the CSV and the plot;
- `cli`: the command line.
"""

from ideal_pipeline.reporting.cli import main
from ideal_pipeline.reporting.render import plot, write_markdown, write_report
from ideal_pipeline.reporting.runs import (
    BASELINE_METRICS,
    METRICS,
    RECORD,
    TIMING,
    Run,
    merge_runs,
    project_defaults,
    read_record,
    run_from_project,
    runs_from_dvc,
    runs_from_dvc_json,
    write_record,
)
from ideal_pipeline.reporting.statistics import (
    by_configuration,
    describe,
    summarize,
    table_rows,
    timing_rows,
)
from ideal_pipeline.reporting.suite import suite_pairs, suite_rows, suite_scores

__all__ = [
    "BASELINE_METRICS",
    "METRICS",
    "RECORD",
    "TIMING",
    "Run",
    "by_configuration",
    "describe",
    "main",
    "merge_runs",
    "plot",
    "project_defaults",
    "read_record",
    "run_from_project",
    "runs_from_dvc",
    "runs_from_dvc_json",
    "suite_pairs",
    "suite_rows",
    "suite_scores",
    "summarize",
    "table_rows",
    "timing_rows",
    "write_markdown",
    "write_record",
    "write_report",
]
