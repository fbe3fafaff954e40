"""Nodes of the `evaluate` pipeline (no teacher queries: the owner's test predictions are used)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ideal_pipeline.ideal.distillation import predict
from ideal_pipeline.runtime import load_student, resolve_device

logger = logging.getLogger(__name__)


def _score(state, real_test, teacher_predictions, teacher_api, architecture, device) -> tuple[float, float]:
    predictions = predict(load_student(architecture, teacher_api, state), real_test["images"], device)
    return (
        (predictions == real_test["labels"]).float().mean().item(),
        (predictions == teacher_predictions).float().mean().item(),
    )


def score_students(
    real_test: dict[str, torch.Tensor],
    teacher_test_predictions: torch.Tensor,
    teacher_api: dict[str, Any],
    ideal_params: dict[str, Any],
    params: dict[str, Any],
    *students_and_summaries: Any,
) -> pd.DataFrame:
    """Test accuracy and teacher agreement of the student after each round, against queries."""
    device = resolve_device(params["device"])
    states, summaries = students_and_summaries[0::2], students_and_summaries[1::2]
    rows = []
    for state, summary in zip(states, summaries):
        accuracy, agreement = _score(
            state, real_test, teacher_test_predictions, teacher_api, ideal_params["student"]["architecture"], device
        )
        rows.append({"round": summary["round"], "queries_used": summary["queries_used"], "student_accuracy": accuracy, "agreement": agreement})
        logger.info("round %d/%d | queries %d | student accuracy %.2f%%", summary["round"], len(states), summary["queries_used"], 100 * accuracy)
    return pd.DataFrame(rows)


def summarize_metrics(
    accuracy_vs_queries: pd.DataFrame,
    redistilled_student: dict[str, torch.Tensor],
    real_test: dict[str, torch.Tensor],
    teacher_test_predictions: torch.Tensor,
    teacher_metrics: dict[str, Any],
    final_summary: dict[str, Any],
    teacher_api: dict[str, Any],
    ideal_params: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Headline metrics for `dvc metrics show`: the *final* students, never a best-on-test pick."""
    final = accuracy_vs_queries.iloc[-1]
    redistilled_accuracy, redistilled_agreement = _score(
        redistilled_student, real_test, teacher_test_predictions, teacher_api,
        ideal_params["student"]["architecture"], resolve_device(params["device"]),
    )  # fmt: skip
    metrics = {
        "student_accuracy": float(final["student_accuracy"]),
        "agreement": float(final["agreement"]),
        "redistilled_student_accuracy": redistilled_accuracy,
        "redistilled_agreement": redistilled_agreement,
        "teacher_accuracy": float(teacher_metrics["teacher_accuracy"]),
        "queries_used": int(final_summary["queries_used"]),
        "rounds": int(final_summary["round"]),
        "pool_size": int(final_summary["pool_size"]),
        "teacher_label_counts": final_summary["class_counts"],
    }
    logger.info(
        "student %.2f%% (re-distilled %.2f%%), teacher %.2f%%, agreement %.2f%%, %d queries",
        100 * metrics["student_accuracy"], 100 * redistilled_accuracy, 100 * metrics["teacher_accuracy"],
        100 * metrics["agreement"], metrics["queries_used"],
    )  # fmt: skip
    return metrics


def plot_accuracy_curve(accuracy_vs_queries: pd.DataFrame, metrics: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(7, 4.5), dpi=110)
    axes = figure.subplots()
    axes.plot(accuracy_vs_queries["queries_used"], 100 * accuracy_vs_queries["student_accuracy"], marker=".", label="student (round by round)")
    axes.plot(accuracy_vs_queries["queries_used"], 100 * accuracy_vs_queries["agreement"], alpha=0.6, label="agreement with teacher")
    axes.axhline(100 * metrics["teacher_accuracy"], color="grey", linestyle="--", label="teacher")
    axes.scatter([metrics["queries_used"]], [100 * metrics["redistilled_student_accuracy"]], color="red", zorder=3, label="re-distilled (0 extra queries)")
    axes.set(xlabel="teacher queries", ylabel="test accuracy (%)", title="IDEAL: student accuracy against queries", ylim=(0, 100))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_synthetic_grid(teacher_api: dict[str, Any], params: dict[str, Any], *pool: torch.Tensor) -> Figure:
    """Synthetic images grouped by the label the teacher gave them (one row per class)."""
    images, labels = torch.cat(pool[0::2]), torch.cat(pool[1::2])
    per_class = params["grid_per_class"]
    names = teacher_api.get("class_names") or list(range(teacher_api["num_classes"]))
    figure = Figure(figsize=(per_class * 0.9 + 1.6, len(names) * 0.9), dpi=100)
    grid = figure.subplots(len(names), per_class, squeeze=False)
    generator = torch.Generator().manual_seed(params["seed"])
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
