"""One progress line per round: what was paid, how the student does on the validation split, when the run ends.

A Kedro hook (`hooks.ProgressHook`) feeds it the rounds as they finish. The validation split is
real data held out of training; reading it to report progress never feeds the method.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import torch

from ideal_pipeline.models.students import load_student
from ideal_pipeline.models.training import predict

logger = logging.getLogger("ideal_pipeline.progress")
VALIDATION_SAMPLES = 1000  # enough to follow the trend; the evaluate stage scores the whole split


@dataclass
class MethodProgress:
    """The rounds of one method (`ideal`, `baselines.uniform_noise`) in the run being watched."""

    total: int
    done: int = 0
    # Only the time spent in this method's own nodes: methods' rounds interleave, and the data and
    # victim stages run before any round, so the wall clock since the start says nothing of a round's cost.
    seconds: float = 0.0


def time_left(methods: Iterable[MethodProgress]) -> str:
    """The rounds still to run, of every method, at each method's own pace so far (a method not yet
    started at the mean pace of the others)."""
    methods = list(methods)
    paces = [method.seconds / method.done for method in methods if method.done]
    if not paces:
        return "-"
    mean_pace = sum(paces) / len(paces)
    left = sum(
        (method.seconds / method.done if method.done else mean_pace) * (method.total - method.done)
        for method in methods
    )
    return duration_left(left)


def duration_left(seconds: float) -> str:
    """`12 min left (~14:05)`, `40 s left` under a minute, or `done`."""
    if seconds <= 0:
        return "done"
    end = (datetime.now() + timedelta(seconds=seconds)).strftime("%H:%M")
    return f"{seconds / 60:.0f} min left (~{end})" if seconds >= 60 else f"{seconds:.0f} s left"


def validation_accuracy(state: dict[str, torch.Tensor], architecture: str, card: dict, validation: dict) -> float:
    student = load_student(architecture, card, state, averaged=True)
    images, labels = validation["images"][:VALIDATION_SAMPLES], validation["labels"][:VALIDATION_SAMPLES]
    with torch.inference_mode():
        return (predict(student, images, torch.device("cpu")) == labels).float().mean().item()


def round_line(method: str, summary: dict[str, Any], paid_now: int | None, accuracy: float | None, eta: str) -> str:
    hit = summary.get("target_hit_rate")
    parts = [
        f"{method} round {summary['round']}",
        f"queries {summary['queries_used']:,}/{summary['planned_queries']:,}"
        + ("" if paid_now is None else f" (paid now {paid_now:,})"),
        f"validation {100 * accuracy:.1f}%" if accuracy is not None else None,
        f"targets hit {100 * hit:.0f}%" if hit is not None else None,
        f"rarest class {summary['smallest_class_count']}",
        f"distill loss {summary['distill_loss']:.3f}",
        eta,
    ]
    return " | ".join(part for part in parts if part)
