"""One comparison report over finished runs: IDEAL and its baselines, mean, std and 95% interval over seeds.

    python -m ideal_pipeline.reporting --dvc                 # every DVC experiment of this repository
    python -m ideal_pipeline.reporting --runs RUN_DIR ...    # project copies that ran `kedro run` (no DVC)
    python -m ideal_pipeline.reporting                       # only the runs recorded earlier

Every run reported is also kept in a record (`--record`, default benchmarks/results/runs.json, in
git): DVC experiments live in one checkout's git refs and are gone with it, the record is not.
Later reports merge the record with the new runs.

A run is one `kedro run` of the default pipeline: its parameters and its metrics
(`data/08_reporting/evaluate/metrics.json`, `baselines_metrics.json`, `timing/<stage>.json`).
Runs whose parameters differ only in `ideal.seed` (and thread counts) are seeds of one
configuration. Writes `comparison.md`, `comparison.csv` (one row per configuration and method),
`comparison.png` (each configuration's accuracy, interval and seeds) and the per-stage
wall-clock table inside the Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

METRICS = "data/08_reporting/evaluate/metrics.json"
BASELINE_METRICS = "data/08_reporting/baselines_metrics.json"
TIMING = "data/08_reporting/timing"
RECORD = Path("benchmarks/results/runs.json")
# Parameters that do not make a different configuration: the seed is what we average over; the
# budget cap and request size change what may be spent, not what is learned; which baselines ran
# beside IDEAL does not change IDEAL either.
NOT_CONFIGURATION = (
    "ideal.seed",
    "compute.num_threads",
    "ideal.teacher_access.max_queries",
    "ideal.teacher_access.max_batch",
    "baselines.methods",
    "evaluate.score_every",  # how many round students are scored, not how they were trained
    "victim_api.published_model_path",  # where the victim's file lies, not how it was trained
    "victim.published_model_path",  # the same, where older runs kept it
)
# Parameters whose value the run resolves (`auto` in the defaults): not named against the defaults.
RESOLVED_KEYS = ("device", "precision")  # metrics.json's names; `compute.<key>` among the parameters
RESOLVED = tuple(f"compute.{key}" for key in RESOLVED_KEYS)
# The rows of a configuration, in order: (method, label, metrics key of the accuracy).
IDEAL_ROWS = (
    ("ideal", "IDEAL, final student", "student_accuracy"),
    ("ideal", "IDEAL, mean of the last 5 rounds", "student_accuracy_last5_mean"),
    ("ideal", "IDEAL re-distilled (0 extra queries)", "redistilled_student_accuracy"),
)
VALIDATION = {
    "student_accuracy": "validation_accuracy",
    "student_accuracy_last5_mean": "validation_accuracy_last5_mean",
    "redistilled_student_accuracy": "redistilled_validation_accuracy",
}


def resolved_compute(params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """`compute.device` / `compute.precision` as the run resolved them ("auto" means different
    arithmetic on different machines), where its metrics say so."""
    resolved = {f"compute.{key}": metrics[key] for key in RESOLVED_KEYS if key in metrics}
    return {**params, **resolved}


def with_compute(run: Run, device: str, precision: str) -> Run:
    """`run` with the device and precision it ran in, told by the user, where its metrics do not say."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    told = {**run.params, "compute.device": device, "compute.precision": precision}
    return replace(run, params=resolved_compute(told, run.metrics))


@dataclass
class Run:
    name: str
    params: dict[str, Any]  # dotted keys
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    finished: str = ""  # ISO time the run's results were recorded: a later run of a seed replaces an earlier one


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------------------------------- sources


def runs_from_dvc_json(exp_show: list[dict[str, Any]], head: str | None = None) -> list[Run]:
    """Runs out of `dvc exp show --json -A`: every experiment, and every commit that has metrics
    (only `head`'s when given: older commits hold runs of older code)."""
    runs = []

    def add(name: str, data: dict[str, Any]) -> None:
        metrics = {path: entry.get("data", {}) for path, entry in (data.get("metrics") or {}).items()}
        if not metrics.get(METRICS):
            return
        params: dict[str, Any] = {}
        for entry in (data.get("params") or {}).values():
            params.update(flatten(entry.get("data", {})))
        timing = {Path(p).stem: m for p, m in metrics.items() if p.startswith(TIMING + "/")}
        finished = data.get("timestamp") or ""
        params = resolved_compute(params, metrics[METRICS])
        runs.append(Run(name, params, metrics[METRICS], metrics.get(BASELINE_METRICS) or {}, timing, finished))

    for commit in exp_show:
        if commit.get("rev") == "workspace":
            continue
        if commit.get("data") and head in (None, commit.get("rev")):
            add(commit.get("name") or commit["rev"][:7], commit["data"])
        for experiment in commit.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") not in (None, "success"):
                continue  # queued, running or failed: DVC shows its base commit's metrics beside its own params
            for rev in experiment.get("revs", [])[:1]:  # the experiment's final state
                add(experiment.get("name") or rev["rev"][:7], rev.get("data") or {})
    return runs


def runs_from_dvc(repo: Path) -> list[Run]:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json", "-A"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"`dvc exp show --json -A` failed in {repo}: {done.stderr.strip()[-500:]}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    return runs_from_dvc_json(json.loads(done.stdout), head.stdout.strip())


def run_from_project(project: Path, env: str | None = None) -> Run:
    """A project copy after `kedro run`: parameters through the project's own config loader."""
    from ideal_pipeline.pipeline_registry import parameters_from_conf

    metrics_path = project / METRICS
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} is missing: did `kedro run` finish in {project}?")
    baselines = project / BASELINE_METRICS
    timing = {p.stem: json.loads(p.read_text()) for p in (project / TIMING).glob("*.json") if p.stem != "kedro_run"}
    metrics = json.loads(metrics_path.read_text())
    return Run(
        project.name,
        resolved_compute(flatten(parameters_from_conf(project, env)), metrics),
        metrics,
        json.loads(baselines.read_text()) if baselines.is_file() else {},
        timing,
        datetime.fromtimestamp(metrics_path.stat().st_mtime).isoformat(),
    )


def project_defaults(project: Path, env: str | None = None) -> dict[str, Any] | None:
    """The flat parameters of a Kedro project's conf (None where `project` has no conf/base)."""
    if not (project / "conf" / "base").is_dir():
        return None
    from ideal_pipeline.pipeline_registry import parameters_from_conf

    return flatten(parameters_from_conf(project, env))


def read_record(path: Path) -> list[Run]:
    """The runs an earlier report recorded (none when `path` does not exist yet)."""
    if not path.is_file():
        return []
    try:
        return [Run(**entry) for entry in json.loads(path.read_text())]
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{path} is not a run record written by this report: {error}") from error


def merge_runs(recorded: list[Run], new: list[Run]) -> list[Run]:
    """The recorded runs and the new ones; a run seen again (same name and finishing time) once.

    Runs of one seed with the very same metrics and seconds per step are one run seen twice, the
    earliest kept: a later commit that changes parameters without rerunning the pipeline shows the
    earlier run's metrics beside parameters that run never had.
    """
    merged = {(r.name, r.finished): r for r in recorded}
    merged.update({(r.name, r.finished): r for r in new})
    by_outcome: dict[str, Run] = {}
    for run in sorted(merged.values(), key=lambda r: r.finished):
        outcome = [run.params.get("ideal.seed"), run.metrics, run.baselines, run.timing]
        by_outcome.setdefault(json.dumps(outcome, sort_keys=True), run)
    return list(by_outcome.values())


def write_record(runs: list[Run], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(runs, key=lambda r: (r.finished, r.name))
    text = json.dumps([asdict(r) for r in ordered], indent=1, sort_keys=True) + "\n"
    partial = path.with_suffix(".json.partial")
    partial.write_text(text)
    partial.replace(path)  # an interrupted report leaves the earlier record whole


# ---------------------------------------------------------------------------------------------- statistics


def summarize(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the 95% interval of the mean (Student's t) over seeds, for accuracies:
    the interval is cut to [0, 1] (with two seeds t's interval easily passes 100%)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half)}


def configuration(run: Run) -> tuple:
    return tuple(sorted((k, json.dumps(v)) for k, v in run.params.items() if k not in NOT_CONFIGURATION))


def describe(configs: list[tuple], defaults: dict[str, Any] | None = None) -> dict[tuple, str]:
    """Name each configuration by the parameters that set it apart from the others or, given the
    project's flat parameters (`defaults`), by those that differ from them ("defaults" when none)."""
    as_dicts = {c: dict(c) for c in configs}
    keys = sorted({k for d in as_dicts.values() for k in d})
    varying = [k for k in keys if len({x.get(k) for x in as_dicts.values()}) > 1]
    # Parameters compared against the defaults; the resolved compute is named only where it varies.
    pinned = {k: json.dumps(v) for k, v in (defaults or {}).items() if k not in RESOLVED}

    def shown(d: dict[str, str], with_missing: bool) -> list[str]:
        if defaults is None:
            return varying
        # A parameter the project no longer has, or that the run resolved (the compute `auto` chose: the
        # table's compute column), is named only where the configurations differ in it. One a run
        # predates is named only where leaving it out would give two configurations one name.
        return [
            k for k in keys if (k in d or with_missing) and (d.get(k) != pinned[k] if k in pinned else k in varying)
        ]

    def name(d: dict[str, str], with_missing: bool) -> str:
        return ", ".join(f"{k}={_short(d.get(k, 'null'))}" for k in shown(d, with_missing)) or "defaults"

    short = {c: name(d, with_missing=False) for c, d in as_dicts.items()}
    taken = list(short.values())
    return {c: n if taken.count(n) == 1 else name(as_dicts[c], with_missing=True) for c, n in short.items()}


def _short(value_json: str) -> str:
    """A parameter's value for a configuration's name: a long list as its length."""
    value = json.loads(value_json)
    if isinstance(value, list) and len(value_json) > 40:
        return f"[{len(value)} items]"
    return str(value)


def by_configuration(runs: list[Run], defaults: dict[str, Any] | None = None) -> dict[str, list[Run]]:
    """The runs grouped into configurations (their seeds), each named by what sets it apart."""
    groups: dict[tuple, dict[Any, Run]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.finished):  # one run per seed: the latest of a seed counts
        groups[configuration(run)][run.params.get("ideal.seed")] = run
    names = describe(list(groups), defaults)
    return {names[config]: list(seeds.values()) for config, seeds in groups.items()}


def table_rows(runs: list[Run], defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per configuration and method, with the accuracy statistics over its seeds."""
    rows = []
    for name, seeds in by_configuration(runs, defaults).items():
        entries = [(method, label, key, [(r, r.metrics) for r in seeds]) for method, label, key in IDEAL_ROWS]
        methods = sorted({m for r in seeds for m in r.baselines})
        entries += [
            (m, m.replace("_", " "), "student_accuracy", [(r, r.baselines[m]) for r in seeds if m in r.baselines])
            for m in methods
        ]
        for method, label, key, all_metrics in entries:
            counted = [(r, m) for r, m in all_metrics if key in m]  # runs of older code may lack a newer metric
            if not counted:
                continue
            metrics = [m for _, m in counted]
            stats_test = summarize([m[key] for m in metrics])
            validation = [m[VALIDATION[key]] for m in metrics if VALIDATION[key] in m]
            rows.append(
                {
                    "configuration": name,
                    "method": method,
                    "row": label,
                    "queries": metrics[0]["queries_used"],
                    "seeds": stats_test["n"],
                    "seed_list": " ".join(str(r.params.get("ideal.seed")) for r, _ in counted),
                    "test_per_seed": [m[key] for m in metrics],
                    "test_mean": stats_test["mean"],
                    "test_std": stats_test["std"],
                    "test_ci_low": stats_test["ci_low"],
                    "test_ci_high": stats_test["ci_high"],
                    "validation_mean": statistics.fmean(validation) if validation else math.nan,
                    "smallest_class_share_min": min(m.get("smallest_class_share", math.nan) for m in metrics),
                    "teacher_accuracy_mean": statistics.fmean(r.metrics["teacher_accuracy"] for r, _ in counted),
                    "reference_code_queries": seeds[0].metrics.get("reference_code_queries"),
                    "dataset": seeds[0].params.get("data.source"),
                    "compute": " ".join(str(seeds[0].params.get(k, "?")) for k in RESOLVED),
                }
            )
    return rows


def timing_rows(runs: list[Run], defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Mean seconds per step (summed over rounds) per configuration, over the runs that recorded them."""
    rows = []
    for name, seeds in by_configuration(runs, defaults).items():
        steps = sorted({(stage, step) for r in seeds for stage, t in r.timing.items() for step in t})
        for stage, step in steps:
            values = [r.timing[stage][step] for r in seeds if step in r.timing.get(stage, {})]
            rows.append(
                {
                    "configuration": name,
                    "stage": stage,
                    "step": step,
                    "runs": len(values),
                    "seconds_mean": statistics.fmean(values),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------- outputs


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def write_markdown(path: Path, rows: list[dict], timings: list[dict], command: str, from_defaults: bool) -> None:
    naming = (
        "Configurations are named by the parameters they change from the project's defaults (conf/base;"
        " `defaults` when none); compute: the device and precision `auto` resolved to."
        if from_defaults
        else "Configurations are named by the parameters that set them apart."
    )
    lines = [
        "# IDEAL against query-matched baselines",
        "",
        f"Generated by `{command}` over {len({r['configuration'] for r in rows})} configuration(s). Accuracy on the test",
        "set in %, mean ± std over seeds with the 95% interval of the mean (Student's t); the validation split",
        "(held out of the training images) is what chooses settings. Fewer than 5 seeds: read the interval.",
        naming,
        "",
        "| configuration | method | queries | seeds | test accuracy | 95% interval | validation | rarest class share (min) | teacher | compute |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['configuration']} | {r['row']} | {r['queries']:,} | {r['seeds']} | {_percent(r['test_mean'])} ± "
            f"{_percent(r['test_std'])} | [{_percent(r['test_ci_low'])}, {_percent(r['test_ci_high'])}] | "
            f"{_percent(r['validation_mean'])} | {_percent(r['smallest_class_share_min'])} | {_percent(r['teacher_accuracy_mean'])} | "
            f"{r['compute']} |"
        )
    reference = {r["configuration"]: r["reference_code_queries"] for r in rows if r["reference_code_queries"]}
    if reference:
        lines += [
            "",
            "The reference code's accounting for the same rounds (it re-labels its whole pool every round):",
            *[f"- {c}: {q:,} queries" for c, q in reference.items()],
        ]
    if timings:
        lines += [
            "",
            "## Where the time goes (seconds per run, summed over rounds, mean over runs)",
            "",
            "| configuration | stage | step | runs | seconds |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['configuration']} | {t['stage']} | {t['step']} | {t['runs']} | {t['seconds_mean']:.1f} |"
            for t in timings
        ]
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    """Test accuracy per configuration (IDEAL's final student and the baselines): the mean with its
    95% interval, each seed as a dot, the validation mean as a hollow diamond; grouped by dataset
    and budget."""
    from matplotlib.figure import Figure

    shown = [r for r in rows if r["method"] != "ideal" or r["row"] == IDEAL_ROWS[0][1]]
    shown.sort(key=lambda r: (str(r["dataset"]), -r["queries"], -r["test_mean"]))
    labels = [
        f"{r['dataset'] or '?'}, {r['queries']:,} q, {r['seeds']} seed(s): {r['configuration']}"
        + ("" if r["method"] == "ideal" else f" [{r['row']}]")
        for r in shown
    ]
    # Room for the longest label at 7 points (about 0.055 inch a character) beside a 5-inch axis.
    figure = Figure(figsize=(5.5 + 0.055 * max(map(len, labels)), 1.6 + 0.32 * len(shown)), dpi=110)
    axes = figure.subplots()
    for y, r in enumerate(shown):
        color = "tab:blue" if r["method"] == "ideal" else "tab:gray"
        if not math.isnan(r["test_ci_low"]):
            axes.plot([100 * r["test_ci_low"], 100 * r["test_ci_high"]], [y, y], color=color, lw=2, alpha=0.5)
        axes.plot(100 * r["test_mean"], y, "o", color=color)
        axes.plot([100 * v for v in r["test_per_seed"]], [y] * len(r["test_per_seed"]), "|", color="black", ms=7)
        if not math.isnan(r["validation_mean"]):
            axes.plot(100 * r["validation_mean"], y, "D", mfc="none", color="tab:orange", ms=5)
    axes.set_yticks(range(len(shown)), labels, fontsize=7)
    lowest = min(min(r["test_per_seed"] + [r["test_ci_low"]]) for r in shown)  # nan compares False
    axes.set_xlim(max(0.0, 100 * lowest - 5), 100)
    axes.set_xlabel("test accuracy %: mean (dot), 95% interval (bar), seeds (|), validation mean (\u25c7)", fontsize=8)
    axes.invert_yaxis()  # first configuration on top
    axes.grid(axis="x", alpha=0.3)
    figure.suptitle("IDEAL's final student (blue) and the baselines (gray), per configuration", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def write_report(
    runs: list[Run], out_dir: Path, command: str, defaults: dict[str, Any] | None = None
) -> dict[str, Path]:
    import pandas as pd

    if not runs:
        raise ValueError("no finished runs to report (no metrics found)")
    rows, timings = table_rows(runs, defaults), timing_rows(runs, defaults)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out_dir / "comparison.md",
        "csv": out_dir / "comparison.csv",
        "png": out_dir / "comparison.png",
    }
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    write_markdown(paths["md"], rows, timings, command, defaults is not None)
    plot(rows, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dvc", nargs="?", const=".", type=Path, metavar="REPO", help="DVC experiments of REPO")
    source.add_argument("--runs", nargs="+", type=Path, metavar="DIR", help="project copies that ran `kedro run`")
    parser.add_argument("--env", default=None, help="Kedro environment the --runs used")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--defaults",
        type=Path,
        default=Path("."),
        metavar="PROJECT",
        help="name configurations by what they change from this project's parameters (default: here)",
    )
    parser.add_argument("--record", type=Path, default=RECORD, help="runs recorded so far, merged and rewritten")
    parser.add_argument(
        "--ran-on",
        nargs=2,
        metavar=("DEVICE", "PRECISION"),
        help="what compute auto resolved to for the new runs whose metrics predate recording it (e.g. cpu bf16)",
    )
    args = parser.parse_args(argv)
    if args.dvc:
        new = runs_from_dvc(args.dvc)
    else:
        new = [run_from_project(p, args.env) for p in args.runs or []]
    if args.ran_on:
        new = [with_compute(run, *args.ran_on) for run in new]
    runs = merge_runs(read_record(args.record), new)
    command = "python -m ideal_pipeline.reporting " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = write_report(runs, args.out_dir, command, project_defaults(args.defaults, args.env))
    write_record(runs, args.record)
    paths["record"] = args.record
    print("\n".join(str(p) for p in paths.values()))
    return paths


if __name__ == "__main__":
    main()
