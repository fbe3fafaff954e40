"""Nodes of the `evaluate` pipeline (no teacher queries: the owner's test predictions are used).

The validation split chooses settings; the test set is reported beside it, never used to pick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ideal_pipeline.compute import resolve_compute, signature
from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPool
from ideal_pipeline.models.students import load_student
from ideal_pipeline.models.training import predict
from ideal_pipeline.parameter_schema import ComputeParams, EvaluateParams, StudentParams
from ideal_pipeline.rounds.nodes import Card, Split, Summary, Weights
from ideal_pipeline.rounds.scoring import LAST_ROUNDS, accuracy, by_round, coverage, final_and_recent

logger = logging.getLogger(__name__)


def summarize_metrics(
    accuracy_vs_queries: pd.DataFrame,
    redistilled_student: Weights,
    final_summary: Summary,
    real_validation: Split,
    real_test: Split,
    teacher_test_predictions: torch.Tensor,
    teacher_metrics: dict[str, Any],
    teacher_api: Card,
    student: StudentParams,
    batch_size: int,
    compute: ComputeParams,
) -> dict[str, Any]:
    """Headline metrics for `dvc metrics show`: the *final* students, never a best-on-test pick."""
    resolved = resolve_compute(compute)
    device = resolved.device
    redistilled = load_student(student.architecture, teacher_api, redistilled_student)
    redistilled_test = predict(redistilled, real_test["images"], device)
    rounds = int(final_summary["round"])
    metrics = {
        **final_and_recent(accuracy_vs_queries),
        "redistilled_student_accuracy": accuracy(redistilled_test, real_test["labels"]),
        "redistilled_validation_accuracy": accuracy(
            predict(redistilled, real_validation["images"], device), real_validation["labels"]
        ),
        "redistilled_agreement": accuracy(redistilled_test, teacher_test_predictions),
        "teacher_accuracy": float(teacher_metrics["teacher_accuracy"]),
        **coverage(final_summary),
        # What the reference code would have paid for the same rounds: it re-labels its whole
        # (augmented) pool every round, B * r queries in round r. Computed, not run.
        "reference_code_queries": batch_size * rounds * (rounds + 1) // 2,
        # What compute.device / compute.precision "auto" resolved to on this machine: the same
        # parameters train in bf16 on a CPU with AMX or AVX512-BF16 and in fp32 on one without.
        "device": device.type,
        "precision": "bf16" if resolved.precision == torch.bfloat16 else "fp32",
        # The same parameters and seed reach other accuracies on other processors (GEMM blocking
        # differs): runs of two machines are not seeds of one configuration.
        "processor": signature(resolved)["processor"],
    }
    logger.info(
        "student %.2f%% (last %d rounds %.2f%%, re-distilled %.2f%%), validation %.2f%%, teacher %.2f%%, %d queries",
        100 * metrics["student_accuracy"],
        LAST_ROUNDS,
        100 * metrics[f"student_accuracy_last{LAST_ROUNDS}_mean"],
        100 * metrics["redistilled_student_accuracy"],
        100 * metrics["validation_accuracy"],
        100 * metrics["teacher_accuracy"],
        metrics["queries_used"],
    )
    return metrics


def plot_accuracy_curve(accuracy_vs_queries: pd.DataFrame, metrics: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(7, 4.5), dpi=110)
    axes = figure.subplots()
    queries = accuracy_vs_queries["queries_used"]
    axes.plot(queries, 100 * accuracy_vs_queries["student_accuracy"], marker=".", label="student, test set")
    axes.plot(queries, 100 * accuracy_vs_queries["validation_accuracy"], alpha=0.7, label="student, validation split")
    axes.plot(queries, 100 * accuracy_vs_queries["agreement"], alpha=0.5, label="agreement with teacher")
    axes.axhline(100 * metrics["teacher_accuracy"], color="grey", linestyle="--", label="teacher")
    axes.scatter(
        [metrics["queries_used"]],
        [100 * metrics["redistilled_student_accuracy"]],
        color="red",
        zorder=3,
        label="re-distilled (0 extra queries)",
    )
    axes.set(
        xlabel="teacher queries", ylabel="accuracy (%)", title="IDEAL: student accuracy against queries", ylim=(0, 100)
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="best")  # low curves (CIFAR-10) would hide under a fixed lower-right legend
    figure.tight_layout()
    return figure


def plot_class_coverage(
    pool_summaries: dict[str, Callable[[], dict[str, Any]]], final_summary: dict[str, Any], teacher_api: dict[str, Any]
) -> Figure:
    """Share of the teacher's labels per class as queries grow: a class it never gives cannot be learned."""
    summaries = [load() for _, load in by_round(pool_summaries, final_summary["round"])]
    queries = [s["queries_used"] for s in summaries]
    counts = torch.tensor([s["class_counts"] for s in summaries], dtype=torch.float64)
    shares = (100 * counts / counts.sum(1, keepdim=True).clamp_min(1)).T.numpy()
    names = teacher_api.get("class_names") or list(range(teacher_api["num_classes"]))
    figure = Figure(figsize=(7, 4.5), dpi=110)
    axes = figure.subplots()
    axes.stackplot(queries, shares, labels=[str(n) for n in names])
    axes.set(
        xlabel="teacher queries",
        ylabel="share of the teacher's labels (%)",
        ylim=(0, 100),
        title="Class coverage of the labelled pool",
    )
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.tight_layout()
    return figure


def plot_synthetic_grid(
    labelled_pool: LabelledPool, final_summary: dict[str, Any], teacher_api: dict[str, Any], params: EvaluateParams
) -> Figure:
    """Synthetic images grouped by the label the teacher gave them (one row per class)."""
    images, labels = labelled_pool.load(final_summary["round"])
    per_class = params.grid_per_class
    names = teacher_api.get("class_names") or list(range(teacher_api["num_classes"]))
    figure = Figure(figsize=(per_class * 0.9 + 1.6, len(names) * 0.9), dpi=100)
    grid = figure.subplots(len(names), per_class, squeeze=False)
    generator = torch.Generator().manual_seed(params.seed)
    for k, name in enumerate(names):
        members = torch.nonzero(labels == k).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        for j in range(per_class):
            axes = grid[k][j]
            axes.set_xticks([])
            axes.set_yticks([])
            if j < len(chosen):
                image = images[chosen[j]].permute(1, 2, 0).squeeze(-1).numpy()
                axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            if j == 0:
                axes.set_ylabel(f"{name}\n({len(members)})", rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle("Synthetic samples by teacher label (count in pool)")
    return figure
