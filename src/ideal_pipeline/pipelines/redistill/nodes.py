"""Nodes of the `redistill` pipeline: zero queries, only the labels already paid for."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPool
from ideal_pipeline.ideal.distillation import DistillSettings, distill
from ideal_pipeline.runtime import build_student, load_student, settings_from, state_to_tensors, use_compute

logger = logging.getLogger(__name__)

INITS = ("final_student", "fresh")


def redistill_student(
    final_student: dict[str, torch.Tensor],
    final_summary: dict[str, Any],
    labelled_pool: LabelledPool,
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    student_params: dict[str, Any],
    compute: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Several epochs on the whole pool, from the round-by-round student or from scratch."""
    device, precision = use_compute(compute)
    architecture = student_params["architecture"]
    torch.manual_seed(params["seed"])
    if params["init"] == "final_student":
        student = load_student(architecture, teacher_api, final_student)
    elif params["init"] == "fresh":
        student = build_student(architecture, teacher_api)
    else:
        raise ValueError(f"unknown redistill.init {params['init']!r}; choose one of {INITS}")
    images, labels = labelled_pool.load(final_summary["round"])
    started = time.perf_counter()
    losses = distill(
        student,
        images,
        labels,
        settings_from(DistillSettings, params["distill"], "redistill.distill"),
        seed=params["seed"],
        device=device,
        precision=precision,
    )
    seconds = time.perf_counter() - started
    logger.info("re-distilled on %d pooled samples, %d epochs, 0 queries, %.0f s", len(labels), len(losses), seconds)
    return state_to_tensors(student.cpu()), {"epoch_losses": losses, "pool_size": len(labels), "queries_used": 0}
