"""Scoring a method's students round by round: what evaluate and the baselines both report.

The validation split chooses settings; the test set is reported beside it, never used to pick.
No teacher queries: agreement is measured against the owner's own test predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from ideal_pipeline.compute import resolve_compute
from ideal_pipeline.models.students import load_student
from ideal_pipeline.models.training import predict
from ideal_pipeline.parameter_schema import ComputeParams, StudentParams
from ideal_pipeline.rounds.nodes import Card, Split, Summary

LAST_ROUNDS = 5  # the final student's accuracy moves from round to round: report the last rounds' mean too


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).float().mean().item()


def by_round(partitions: dict[str, Callable[[], Any]], last_round: int) -> list[tuple[int, Callable[[], Any]]]:
    """Partitions `round_NNN` of rounds 1..last_round, in order (later rounds of an older run are ignored)."""
    rounds = sorted(
        (int(key.strip("/").removeprefix("round_")), load)
        for key, load in partitions.items()
        if key.strip("/").startswith("round_")
    )
    found = [r for r, _ in rounds if r <= last_round]
    if found != list(range(1, last_round + 1)):
        missing = sorted(set(range(1, last_round + 1)) - set(found))
        raise ValueError(f"rounds {missing[:5]}{'...' if len(missing) > 5 else ''} have no artifact: rerun them")
    return [(r, load) for r, load in rounds if r <= last_round]


def score_students(
    round_students: dict[str, Callable[[], dict[str, torch.Tensor]]],
    pool_summaries: dict[str, Callable[[], dict[str, Any]]],
    final_summary: Summary,
    real_validation: Split,
    real_test: Split,
    teacher_test_predictions: torch.Tensor,
    teacher_api: Card,
    student: StudentParams,
    compute: ComputeParams,
    score_every: int,
) -> pd.DataFrame:
    """Per scored round: queries, validation and test accuracy, agreement with the teacher, class coverage.

    Every `score_every`-th round is scored, and always the last LAST_ROUNDS (the reported mean):
    each student costs a pass over the validation and test images.
    """
    device = resolve_compute(compute).device
    last_round = final_summary["round"]
    summaries = dict(by_round(pool_summaries, last_round))
    rows = []
    for round_index, load in by_round(round_students, last_round):
        if round_index % score_every and round_index <= last_round - LAST_ROUNDS:
            continue
        model = load_student(student.architecture, teacher_api, load(), averaged=True)
        summary = summaries[round_index]()
        test_predictions = predict(model, real_test["images"], device)
        rows.append(
            {
                "round": round_index,
                "queries_used": summary["queries_used"],
                "validation_accuracy": accuracy(
                    predict(model, real_validation["images"], device), real_validation["labels"]
                ),
                "student_accuracy": accuracy(test_predictions, real_test["labels"]),
                "agreement": accuracy(test_predictions, teacher_test_predictions),
                "smallest_class_count": min(summary["class_counts"]),
                "target_hit_rate": summary.get("target_hit_rate"),
            }
        )
    return pd.DataFrame(rows)


def final_and_recent(curve: pd.DataFrame) -> dict[str, float]:
    recent = curve.tail(LAST_ROUNDS)
    return {
        "student_accuracy": float(curve["student_accuracy"].iloc[-1]),
        "validation_accuracy": float(curve["validation_accuracy"].iloc[-1]),
        "agreement": float(curve["agreement"].iloc[-1]),
        f"student_accuracy_last{LAST_ROUNDS}_mean": float(recent["student_accuracy"].mean()),
        f"validation_accuracy_last{LAST_ROUNDS}_mean": float(recent["validation_accuracy"].mean()),
    }


def coverage(final_summary: dict[str, Any]) -> dict[str, Any]:
    counts = final_summary["class_counts"]
    return {
        "queries_used": int(final_summary["queries_used"]),
        "rounds": int(final_summary["round"]),
        "pool_size": int(final_summary["pool_size"]),
        "teacher_label_counts": counts,
        "smallest_class_share": min(counts) / max(sum(counts), 1),
    }


def summarize_baseline(accuracy_vs_queries: pd.DataFrame, final_summary: dict[str, Any]) -> dict[str, Any]:
    """A baseline's final student and its spend, in the same terms as IDEAL's metrics."""
    return {
        "method": final_summary["method"],
        **final_and_recent(accuracy_vs_queries),
        **coverage(final_summary),
    }
