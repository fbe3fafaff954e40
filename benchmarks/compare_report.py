"""Tables, plot and Markdown of `compare.py`'s runs (one row per method, seed and checkpoint)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

STAGES = ("generation", "labelling", "distillation", "evaluation")



def summarize(runs: pd.DataFrame, reference: list[dict]) -> pd.DataFrame:
    """Mean and std over seeds for each method and checkpoint (std is empty for one seed)."""
    columns = ["queries_paid", "accuracy", "agreement", *(f"{s}_s" for s in STAGES), "total_s"]
    grouped = runs.groupby(["method", "round"], sort=False)
    table = grouped[["queries_budget", "samples", "student_updates"]].first()
    table["seeds"] = grouped["seed"].nunique()
    for column in columns:
        table[f"{column}_mean"] = grouped[column].mean()
    for column in ("queries_paid", "accuracy", "agreement"):
        table[f"{column}_std"] = grouped[column].std(ddof=1)
    table = table.reset_index()
    table["trained"] = True
    reference_rows = pd.DataFrame(reference).rename(columns={"queries_paid": "queries_paid_mean"})
    reference_rows["trained"] = False
    table = pd.concat([table, reference_rows], ignore_index=True)
    for column in ("queries_budget", "samples", "student_updates", "seeds"):
        table[column] = table[column].astype("Int64")  # counts stay integers next to the computed rows' blanks
    paired = [f"{c}_{stat}" for c in ("queries_paid", "accuracy", "agreement") for stat in ("mean", "std")]
    return table[["method", "trained", "round", "queries_budget", *paired, "samples", "student_updates", "seeds",
                  *(f"{s}_s_mean" for s in STAGES), "total_s_mean"]]  # fmt: skip


def plot(summary: pd.DataFrame, dataset: str, teacher_accuracy: float) -> Figure:
    figure = Figure(figsize=(7.5, 4.8), dpi=110)
    axes = figure.subplots()
    for method, rows in summary[summary["trained"]].groupby("method", sort=False):
        x, y = rows["queries_paid_mean"], 100 * rows["accuracy_mean"]
        std = 100 * rows["accuracy_std"].fillna(0)
        axes.plot(x, y, marker="o", label=method)
        axes.fill_between(x, y - std, y + std, alpha=0.15)
    axes.axhline(100 * teacher_accuracy, color="grey", linestyle="--", label=f"teacher ({100 * teacher_accuracy:.1f}%)")
    seeds = int(summary["seeds"].max())
    axes.set(
        xlabel="teacher queries (paid, from each method's ledger)", ylabel="student test accuracy (%)",
        title=f"{dataset}: accuracy against queries (mean ± std over {seeds} seed{'s' * (seeds > 1)})", ylim=(0, 100),
    )  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _pm(mean: float, std: float, scale: float = 100, digits: int = 2) -> str:
    if pd.isna(mean):
        return "—"
    return f"{scale * mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {scale * std:.{digits}f}")


def _final_table(summary: pd.DataFrame) -> str:
    final = summary[summary["round"] == summary["round"].max()]
    rows = []
    for _, r in final.iterrows():
        if not r["trained"]:
            rows.append([r["method"], f"{int(r['queries_paid_mean']):,}", f"{int(r['samples']):,}", "—",
                         "computed, not trained", "—", "—", "", "", "", "", ""])  # fmt: skip
            continue
        rows.append([
            r["method"], f"{r['queries_paid_mean']:,.0f}", f"{int(r['samples']):,}", f"{int(r['student_updates']):,}",
            _pm(r["accuracy_mean"], r["accuracy_std"]), _pm(r["agreement_mean"], r["agreement_std"]), int(r["seeds"]),
            *(f"{r[f'{s}_s_mean']:.1f}" for s in STAGES), f"{r['total_s_mean']:.1f}",
        ])  # fmt: skip
    header = ["method", "queries (ledger)", "samples", "student updates", "accuracy %", "agreement %", "seeds",
              *(f"{s} s" for s in STAGES), "total s"]  # fmt: skip
    return _markdown_table(header, rows)


def _curve_table(summary: pd.DataFrame) -> str:
    trained = summary[summary["trained"]]
    rounds = sorted(trained["round"].unique())
    budgets = trained.drop_duplicates("round").set_index("round")["queries_budget"]
    rows = []
    for method, rows_of in trained.groupby("method", sort=False):
        by_round = rows_of.set_index("round")
        rows.append([method] + [_pm(by_round.loc[r, "accuracy_mean"], by_round.loc[r, "accuracy_std"]) for r in rounds])
    return _markdown_table(["method"] + [f"{int(budgets[r]):,} queries (round {r})" for r in rounds], rows)


def _accounting_table(summary: pd.DataFrame) -> str:
    reference = summary[summary["method"] == "reference_accounting"].set_index("round")
    ideal = summary[summary["method"] == "ideal"].set_index("round")["queries_paid_mean"]
    rows = []
    for r, row in reference.iterrows():
        # IDEAL's ledger when it ran; otherwise what it would pay (rounds x samples per round).
        ours = ideal.get(r, row["queries_budget"])
        rows.append(
            [r, f"{ours:,.0f}", f"{int(row['queries_paid_mean']):,}", f"{row['queries_paid_mean'] / ours:.1f}x"]
        )
    return _markdown_table(["rounds", "ours (IDEAL's ledger)", "reference code (computed)", "reference / ours"], rows)


def _accounting_section(summary: pd.DataFrame) -> str:
    if not (summary["method"] == "reference_accounting").any():
        return ""
    return f"## Queries: ours against the reference code's accounting\n\n{_accounting_table(summary)}\n"


def _label_table(runs: pd.DataFrame, class_names: list[str]) -> str:
    final = runs[runs["round"] == runs["round"].max()]
    rows = []
    for method, rows_of in final.groupby("method", sort=False):
        if method == "ideal_redistilled":
            continue  # same pool as ideal
        counts = np.mean([list(map(int, c.split())) for c in rows_of["class_counts"]], axis=0)
        rows.append([method] + [f"{100 * c / counts.sum():.1f}" for c in counts])
    return _markdown_table(["method"] + list(class_names), rows)


def write_markdown(path: Path, summary: pd.DataFrame, runs: pd.DataFrame, info: dict[str, Any]) -> None:
    p = info["params"]
    seeds_note = "" if info["seeds"] >= 3 else (
        f"\n**{info['seeds']} seed(s) only: a smoke result, not a headline number (those need >= 3 seeds).**\n"
    )  # fmt: skip
    commands = "\n".join(f"`{c}`  " for c in info["command"])
    text = f"""# IDEAL against baselines: {info["dataset"]}

{commands}
{seeds_note}
- Teacher: {info["teacher_architecture"]} trained on {info["train_size"]:,} real images, test accuracy
  {100 * info["teacher_accuracy"]:.2f}% on {info["test_size"]:,} test images (file `{info["teacher_path"]}`).
- Budget Q = {info["queries"]:,} queries: E = {p["rounds"]} rounds x B = {p["batch_size"]} generated images
  {"x 2 (each mirror labelled too)" if p["label_mirrors"] else "(no mirrors)"}; student {p["student"]["architecture"]};
  generator ngf {p["generator"]["ngf"]}, g_steps {p["generator"]["g_steps"]}; distillation lr {p["distill"]["lr"]},
  batch {p["distill"]["batch_size"]}, {p["distill"]["epochs"]} pass(es) over the pool per round.
- Seeds: {info["seed_list"]}. Device: {info["device"]}, torch {torch.__version__}, {platform.node()}.
  Ideal overrides: {info["overrides"] or "none"}.

## At Q (mean ± std over seeds)

Queries are counted by each method's QueryLedger. Wall-clock seconds are per run (mean over seeds),
cumulative up to Q. `ideal_redistilled` costs IDEAL's run plus the re-distillation
({info["redistill"]["distill"]["epochs"]} epochs, init {info["redistill"]["init"]}, 0 queries), and its
"student updates" include those epochs. `reference_accounting` is computed, not trained: the
queries the reference code would spend for the same E rounds of B images (it re-labels the whole
pool, with augmented copies, every round: B*E*(E+1)/2).

{_final_table(summary)}

## Accuracy (%) at each query checkpoint

{_curve_table(summary)}

{_accounting_section(summary)}
## Teacher labels per class at Q (% of the pool, mean over seeds)

{_label_table(runs, info["class_names"])}

## Methods

- `ideal`: the `ideal` pipeline's node functions, round by round; accuracy of the round-by-round student.
- `ideal_redistilled`: `redistill_student` on IDEAL's pool at each checkpoint (0 queries).
- `uniform_noise`, `gaussian_noise` (N(0.5, 0.25²)), `untrained_generator` (IDEAL's generator,
  freshly initialised each round, never trained), `real_data` (real training images in a seeded
  order; past the set's size they repeat and the ledger labels a repeat for free): each round's
  images are labelled through AccountedTeacher and distilled with the same `distill_student` node,
  so every method gets the same distillation settings, seeds and number of student updates as IDEAL.
"""
    path.write_text(text)
