"""The victim suite: each method setting's final student per data set and victim, one score per setting,
and each setting paired with the defaults on the same cells and seeds."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import Any

from ideal_pipeline.reporting.runs import RESOLVED, WALL, WHOLE_RUN, Run, latest_by_seed
from ideal_pipeline.reporting.statistics import (
    BASE_REFERENCE,
    NOT_CONFIGURATION,
    References,
    configuration,
    describe,
    predated_values,
    summarize,
)

# What makes a cell of the victim suite: the data set and the victim (their settings, e.g. a victim's
# epochs, go with them); everything else is the method's settings, compared across the cells.
SUITE_PREFIXES = ("data.", "victim.", "victim_api.")


def _suite_cells(runs: list[Run], defaults: References | None) -> tuple[dict[tuple, dict[Any, Run]], dict]:
    """The runs by (method settings, data set, victim, queries) and seed, the latest of a seed on one
    victim instance counting (`Run.seed_on_victim`), and the settings' names against conf/base's (without its
    data and victim settings)."""
    assumed = predated_values(defaults)

    def cell(run: Run) -> tuple:
        method = tuple((k, v) for k, v in configuration(run, assumed) if not k.startswith(SUITE_PREFIXES))
        data, victim = run.params.get("data.source"), run.params.get("victim.architecture")
        return method, data, victim, run.metrics.get("queries_used")

    cells = latest_by_seed(runs, cell)
    kept = None
    if defaults is not None and BASE_REFERENCE in defaults:
        # Named against conf/base only: without its data and victim settings, an environment's parameters
        # (`env cifar10`) would name settings that never ran on its data set.
        kept = {BASE_REFERENCE: {k: v for k, v in defaults[BASE_REFERENCE].items() if not k.startswith(SUITE_PREFIXES)}}
    return cells, describe(sorted({cell[0] for cell in cells}), kept)


def suite_rows(runs: list[Run], defaults: References | None = None) -> list[dict[str, Any]]:
    """IDEAL's final student per method settings x (data set, victim, budget): how settings chosen on
    one victim hold on the others. Settings are named by what they change from the defaults,
    the data set and victim left out."""
    cells, names = _suite_cells(runs, defaults)
    rows = []
    for (method, data, victim, queries), seeds in cells.items():
        metrics = [r.metrics for r in seeds.values() if "student_accuracy" in r.metrics]
        if not metrics:
            continue
        stats_test = summarize([m["student_accuracy"] for m in metrics])
        rows.append(
            {
                "settings": names[method],
                "dataset": data,
                "victim": victim,
                "queries": queries,
                "seeds": stats_test["n"],
                "test_mean": stats_test["mean"],
                "test_std": stats_test["std"],
                "validation_mean": statistics.fmean(m["validation_accuracy"] for m in metrics),
                "smallest_class_share_min": min(m["smallest_class_share"] for m in metrics),
                "teacher_accuracy_mean": statistics.fmean(m["teacher_accuracy"] for m in metrics),
            }
        )
    return sorted(rows, key=lambda r: (r["settings"], str(r["dataset"]), str(r["victim"]), -r["queries"]))


# The parameters that set the budget, not the method: settings are paired with the defaults at their budget.
BUDGET = ("ideal.rounds", "ideal.batch_size", "ideal.label_mirrors")


def _wall_seconds(run: Run) -> float | None:
    return run.timing.get(WHOLE_RUN, {}).get(WALL)


def suite_pairs(runs: list[Run], defaults: References | None = None) -> list[dict[str, Any]]:
    """Each method settings against conf/base's at the same budget on the same processor and precision,
    pair by pair: the same data set, victim and seed run both ways. Two suite means may stand on other
    cells and seeds; the paired differences of validation accuracy (mean, 95% interval, wins and losses)
    and of wall-clock time do not. Empty without conf/base's parameters."""
    base = (defaults or {}).get(BASE_REFERENCE)
    if base is None:
        return []
    cells, names = _suite_cells(runs, defaults)
    reverted = {
        k: json.dumps(v)
        for k, v in base.items()
        if not k.startswith(SUITE_PREFIXES) and k not in NOT_CONFIGURATION + RESOLVED + BUDGET
    }
    by_method: dict[tuple, dict[tuple, Run]] = defaultdict(dict)
    for (method, data, victim, queries), seeds in cells.items():
        for seed, run in seeds.items():
            if "validation_accuracy" in run.metrics:
                by_method[method][(data, victim, queries, seed)] = run
    rows = []
    for method, pairs in by_method.items():
        reference = tuple(sorted({**dict(method), **reverted}.items()))
        common = sorted(set(pairs) & set(by_method.get(reference, {})) if reference != method else (), key=str)
        if not common:
            continue
        ours, theirs = [pairs[p] for p in common], [by_method[reference][p] for p in common]
        differences = [
            a.metrics["validation_accuracy"] - b.metrics["validation_accuracy"] for a, b in zip(ours, theirs)
        ]
        walls = [(_wall_seconds(a), _wall_seconds(b)) for a, b in zip(ours, theirs)]
        timed = [(a, b) for a, b in walls if a and b]
        stats = summarize(differences, bounds=(-1.0, 1.0))
        rows.append(
            {
                "settings": names[method],
                "reference": names[reference],
                "queries": common[0][2],
                "pairs": len(common),
                "cells": len({p[:3] for p in common}),
                "validation_differences": differences,
                "pair_cells": [f"{data} / {victim}" for data, victim, _, _ in common],
                "validation_difference_mean": stats["mean"],
                "validation_difference_ci_low": stats["ci_low"],
                "validation_difference_ci_high": stats["ci_high"],
                "wins": sum(d > 0 for d in differences),
                "losses": sum(d < 0 for d in differences),
                "test_difference_mean": statistics.fmean(
                    a.metrics["student_accuracy"] - b.metrics["student_accuracy"] for a, b in zip(ours, theirs)
                ),
                # Over the pairs timed both ways; NaN where none was.
                "wall_ratio": sum(a for a, _ in timed) / sum(b for _, b in timed) if timed else math.nan,
            }
        )
    return sorted(rows, key=lambda r: (-r["pairs"], -r["validation_difference_mean"]))


def suite_scores(suite: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One score per method settings and budget: the mean validation accuracy over the suite's cells
    (data set x victim) it ran on, the number defaults are chosen by, beside its worst cell and
    rarest class. Settings that ran on more cells come first: a score over one victim says little."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in suite:
        groups[(row["settings"], row["queries"])].append(row)
    scores = []
    for (settings, queries), rows in groups.items():
        worst = min(rows, key=lambda r: r["validation_mean"])
        scores.append(
            {
                "settings": settings,
                "queries": queries,
                "cells": len(rows),
                "fewest_seeds": min(r["seeds"] for r in rows),
                "validation_mean": statistics.fmean(r["validation_mean"] for r in rows),
                "test_mean": statistics.fmean(r["test_mean"] for r in rows),
                "worst_cell": f"{worst['dataset']} / {worst['victim']}",
                "worst_validation": worst["validation_mean"],
                "smallest_class_share_min": min(r["smallest_class_share_min"] for r in rows),
            }
        )
    return sorted(scores, key=lambda s: (-s["cells"], -s["queries"], -s["validation_mean"]))
