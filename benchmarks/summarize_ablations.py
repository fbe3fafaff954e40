"""Tabulate the CPU ablations (benchmarks/cpu_ablations.sh) into benchmarks/results/ablations.md.

    python benchmarks/summarize_ablations.py

Each variant's merged `compare.py` report sits in benchmarks/results/ablations/<variant>/; the
reference row is IDEAL with today's defaults from benchmarks/results/compare_fashion_mnist.csv
(same teacher, same budget). Rows are read at the budget Q (the last checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
ABLATIONS = RESULTS / "ablations"
# What each ablation varies, in words (the overrides themselves come from the reports).
MEANING = {
    "defaults": "IDEAL as configured: fresh generator, 20 steps, batch-balance entropy weight 5",
    "continued_g20": "generator continued from the previous round instead of re-initialised",
    "fresh_g5": "re-initialised generator, 5 steps per round (4x less generation)",
    "continued_g5": "continued generator, 5 steps per round",
    "entropy_w0": "no entropy term",
    "entropy_w1": "entropy weight 1",
    "entropy_w20": "entropy weight 20",
}


def _at_budget(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv)
    return table[table["round"] == table["round"].max()].set_index("method")


def _pm(row: pd.Series, column: str) -> str:
    std = row[f"{column}_std"]
    return f"{100 * row[f'{column}_mean']:.1f}" + ("" if pd.isna(std) else f" ± {100 * std:.1f}")


def _line(name: str, csv: Path, overrides: list[str]) -> str:
    at_q = _at_budget(csv)
    ideal, redistilled = at_q.loc["ideal"], at_q.loc["ideal_redistilled"] if "ideal_redistilled" in at_q.index else None
    runs = pd.read_csv(csv.with_name(csv.stem + "_runs.csv"))
    final = runs[(runs["method"] == "ideal") & (runs["round"] == runs["round"].max())].sort_values("seed")
    per_seed = ", ".join(f"{seed}: {100 * accuracy:.1f}" for seed, accuracy in zip(final["seed"], final["accuracy"]))
    return (
        f"| {name} | {MEANING.get(name, '')} | `{' '.join(overrides) or 'none'}` | {per_seed} | {int(ideal['queries_paid_mean']):,} "
        f"| {_pm(ideal, 'accuracy')} | {_pm(redistilled, 'accuracy') if redistilled is not None else '—'} "
        f"| {ideal['generation_s_mean']:.0f} | {ideal['distillation_s_mean']:.0f} | {ideal['total_s_mean']:.0f} |"
    )


def main() -> None:
    reference = json.loads((RESULTS / "compare_fashion_mnist.json").read_text())
    lines = [
        "# IDEAL ablations on Fashion-MNIST (CPU)",
        "",
        (
            f"Budget Q = {reference['queries']:,} queries (E = {reference['params']['rounds']} rounds x B = "
            f"{reference['params']['batch_size']} images x 2 with mirrors), teacher "
            f"{100 * reference['teacher_accuracy']:.2f}% (ConvNet), student LeNet. "
            "Regenerate with `bash benchmarks/cpu_ablations.sh` (then this script runs)."
        ),
        "Accuracy: the final round's student, and the query-free re-distilled one, mean ± std over the seeds;",
        "a single round's accuracy moves by a few points, so one-seed differences below ~5 points are noise.",
        "Seconds: per run, one torch thread, two runs sharing the 2-core CPU, at times with other work (generation dominates).",
        "",
        "| variant | what changes | overrides | student % per seed | queries (ledger) | student % | re-distilled % | generation s | distillation s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        _line("defaults", RESULTS / "compare_fashion_mnist.csv", []),
    ]
    order = list(MEANING)
    reports = sorted(ABLATIONS.glob("*/compare_fashion_mnist.json"),
                     key=lambda r: (order.index(r.parent.name) if r.parent.name in order else len(order), r.parent.name))
    notes = set()
    for report in reports:
        info = json.loads(report.read_text())
        if info["queries"] != reference["queries"]:
            raise ValueError(f"{report} was run at Q={info['queries']}, the reference at Q={reference['queries']}")
        lines.append(_line(report.parent.name, report.with_suffix(".csv"), info["overrides"]))
        notes |= {json.loads(part.read_text()).get("note") for part in report.parent.glob("seed*/compare_fashion_mnist.json")}
    lines += ["", *(f"Note: some runs {note}." for note in sorted(filter(None, notes)))]
    (RESULTS / "ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
