"""Nodes of the `redistill` pipeline: zero queries, only the labels already paid for."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ideal_pipeline.compute import resolve_compute
from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPool
from ideal_pipeline.ideal.distillation import distill
from ideal_pipeline.models.students import build_student, load_student, state_to_tensors
from ideal_pipeline.parameter_schema import ComputeParams, RedistillParams, StudentParams
from ideal_pipeline.rounds.nodes import Card, Summary, Weights

logger = logging.getLogger(__name__)


def redistill_student(
    final_student: Weights,
    final_summary: Summary,
    labelled_pool: LabelledPool,
    teacher_api: Card,
    params: RedistillParams,
    student: StudentParams,
    compute: ComputeParams,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Several epochs on the whole pool, from the round-by-round student (its moving average where it
    keeps one) or from scratch; with `distill.weight_average` the result is the average."""
    resolved = resolve_compute(compute)
    torch.manual_seed(params.seed)
    if params.init == "final_student":
        model = load_student(student.architecture, teacher_api, final_student, averaged=True)
    else:
        model = build_student(student.architecture, teacher_api)
    images, labels = labelled_pool.load(final_summary["round"])
    started = time.perf_counter()
    average = {}
    losses = distill(model, images, labels, params.distill, seed=params.seed, compute=resolved, average=average)
    if average:
        model.load_state_dict(average)
    seconds = time.perf_counter() - started
    logger.info("re-distilled on %d pooled samples, %d epochs, 0 queries, %.0f s", len(labels), len(losses), seconds)
    return state_to_tensors(model.cpu()), {"epoch_losses": losses, "pool_size": len(labels), "queries_used": 0}
