"""Runs grouped into configurations (their seeds), each named by what sets it apart, and the
accuracy statistics over seeds: mean, sample std and the 95% interval of the mean (Student's t)."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from ideal_pipeline.reporting.runs import RESOLVED, Run, latest_by_seed

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
    "victim.class_names",  # what the API card calls the classes (the data source's names by default)
)
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


def summarize(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """Mean, sample std and the 95% interval of the mean (Student's t) over seeds, for accuracies:
    the interval is cut to `bounds` (with two seeds t's interval easily passes 100%); differences
    of accuracies lie in [-1, 1]."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    low, high = bounds
    return {"n": n, "mean": mean, "std": std, "ci_low": max(low, mean - half), "ci_high": min(high, mean + half)}


def configuration(run: Run, assumed: dict[str, str] | None = None) -> tuple:
    """The run's parameters that make a configuration; one the run predates takes its `assumed` value."""
    own = {k: json.dumps(v) for k, v in run.params.items() if k not in NOT_CONFIGURATION}
    return tuple(sorted({**(assumed or {}), **own}.items()))


# The name of conf/base's parameters among the references configurations are named against.
BASE_REFERENCE = "defaults"
# Flat parameter sets to name configurations against, by name: conf/base's (BASE_REFERENCE) and
# Kedro environments' (`env cifar10`), as `runs.project_defaults` reads them.
References = dict[str, dict[str, Any]]


def describe(configs: list[tuple], defaults: References | None = None) -> dict[tuple, str]:
    """Name each configuration by the parameters that set it apart from the others or, given the
    project's parameters (`defaults`: conf/base's under "defaults"), by those that differ from them
    ("defaults" when none). Given an environment's parameters too (`env cifar10`), a configuration
    closer to that environment is named by it and what it changes from it."""
    as_dicts = {c: dict(c) for c in configs}
    keys = sorted({k for d in as_dicts.values() for k in d})
    varying = [k for k in keys if len({x.get(k) for x in as_dicts.values()}) > 1]
    # Parameters compared against a reference; the resolved compute is named only where it varies.
    pinned = {
        label: {k: json.dumps(v) for k, v in flat.items() if k not in RESOLVED}
        for label, flat in (defaults or {}).items()
    }

    def shown(d: dict[str, str], with_missing: bool, reference: dict[str, str]) -> list[str]:
        # A parameter the project no longer has, or that the run resolved (the compute `auto` chose: the
        # table's compute column), is named only where the configurations differ in it. One a run
        # predates is named only where leaving it out would give two configurations one name.
        return [
            k
            for k in keys
            if (k in d or with_missing) and (d.get(k) != reference[k] if k in reference else k in varying)
        ]

    def name(d: dict[str, str], with_missing: bool) -> str:
        if defaults is None:
            return ", ".join(f"{k}={_short(d.get(k, 'null'))}" for k in varying) or BASE_REFERENCE
        # The closest reference; conf/base's where several are as close (min keeps the first).
        label, changed = min(
            ((label, shown(d, with_missing, reference)) for label, reference in pinned.items()),
            key=lambda candidate: len(candidate[1]),
        )
        parts = ([] if label == BASE_REFERENCE else [label]) + [f"{k}={_short(d.get(k, 'null'))}" for k in changed]
        return ", ".join(parts) or BASE_REFERENCE

    short = {c: name(d, with_missing=False) for c, d in as_dicts.items()}
    taken = list(short.values())
    return {c: n if taken.count(n) == 1 else name(as_dicts[c], with_missing=True) for c, n in short.items()}


def _short(value_json: str) -> str:
    """A parameter's value for a configuration's name: a long list as its length."""
    value = json.loads(value_json)
    if isinstance(value, list) and len(value_json) > 40:
        return f"[{len(value)} items]"
    return str(value)


# Parameters whose conf/base default changed after they joined the project, with the value they
# joined with: a run that predates one of them ran with that value, not with today's default.
JOINED_WITH = {
    "ideal.generator.candidates": 1,  # 4 since 2026-12-07, chosen on the victim suite
    "ideal.generator.candidate_quota": "turns",  # rescue since 2026-12-07 (noon), chosen on the victim suite
    "ideal.generator.candidates_from_round": 1,  # 2 since 2026-12-07 (noon), with rescue
}


def predated_values(defaults: References | None) -> dict[str, str]:
    """What a run that predates a parameter ran with: the value the parameter joined with, which is
    its default in conf/base unless `JOINED_WITH` says the default changed since, because a parameter
    joins the project with the default that keeps the code's behaviour (docs/architecture.md)."""
    base = (defaults or {}).get(BASE_REFERENCE, {})
    return {
        k: json.dumps(JOINED_WITH.get(k, v))
        for k, v in base.items()
        if k not in NOT_CONFIGURATION and k not in RESOLVED
    }


def compute_label(params: dict[str, Any]) -> str:
    """What a run's `auto` resolved to and its processor (left out where unrecorded): "cpu bf16, AMD EPYC"."""
    device, precision, processor = (params.get(key) for key in RESOLVED)
    label = f"{device or '?'} {precision or '?'}"
    return f"{label}, {processor}" if processor else label


def by_configuration(runs: list[Run], defaults: References | None = None) -> dict[str, list[Run]]:
    """The runs grouped into configurations (their seeds), each named by what sets it apart."""
    assumed = predated_values(defaults)
    groups = latest_by_seed(runs, lambda run: configuration(run, assumed))
    names = describe(list(groups), defaults)
    return {names[config]: list(seeds.values()) for config, seeds in groups.items()}


def table_rows(runs: list[Run], defaults: References | None = None) -> list[dict[str, Any]]:
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
            # A row counts the seeds that have its metric (a run's code may not write every metric),
            # so a missing metric neither fails the report nor turns the row into NaNs.
            counted = [(r, m) for r, m in all_metrics if key in m]
            if not counted:
                continue
            metrics = [m for _, m in counted]
            stats_test = summarize([m[key] for m in metrics])
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
                    "validation_mean": statistics.fmean(m[VALIDATION[key]] for m in metrics),
                    "smallest_class_share_min": min(m["smallest_class_share"] for m in metrics),
                    "teacher_accuracy_mean": statistics.fmean(r.metrics["teacher_accuracy"] for r, _ in counted),
                    "reference_code_queries": seeds[0].metrics["reference_code_queries"],
                    "dataset": seeds[0].params.get("data.source"),
                    "compute": compute_label(seeds[0].params),
                }
            )
    return rows


def timing_rows(runs: list[Run], defaults: References | None = None) -> list[dict[str, Any]]:
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
