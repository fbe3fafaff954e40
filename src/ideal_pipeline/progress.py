"""One progress line per round: what was paid, how the student does on the validation split, when the run ends.

A Kedro hook (`hooks.ProgressHook`) feeds it the rounds as they finish. The validation split is
real data held out of training; reading it to report progress never feeds the method.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
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
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def eta(self) -> str:
        if not self.done or self.done >= self.total:
            return "done" if self.done >= self.total else "-"
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        end = (datetime.now() + timedelta(seconds=left)).strftime("%H:%M")
        return f"{left / 60:.0f} min left (~{end})" if left >= 60 else f"{left:.0f} s left"


def validation_accuracy(state: dict[str, torch.Tensor], architecture: str, card: dict, validation: dict) -> float:
    student = load_student(architecture, card, state)
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
