"""Nodes of the `ideal` pipeline: thin adapters around `ideal_pipeline.ideal`.

A round's state travels between nodes as artifacts: the student's state dict and the
`pool_summary` (round number, class counts of the teacher's labels so far, queries).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ideal_pipeline.ideal.distillation import DistillSettings, distill
from ideal_pipeline.ideal.generation import GeneratorSettings, generate_images, quantize, train_generator
from ideal_pipeline.ideal.targets import round_targets
from ideal_pipeline.runtime import (
    build_student,
    input_shape,
    load_student,
    resolve_device,
    set_threads,
    settings_from,
    state_to_tensors,
)
from ideal_pipeline.teacher.connect import accounted_teacher
from ideal_pipeline.teacher.ledger import QueryLedger

logger = logging.getLogger(__name__)


def _generator_settings(params: dict[str, Any]) -> GeneratorSettings:
    settings = settings_from(GeneratorSettings, params["generator"], "ideal.generator", ignore=("target_sampling",))
    settings.betas = tuple(settings.betas)
    return settings


def _generator_state(artifact: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator's weights out of its artifact (which also holds its noise and targets)."""
    return {k.removeprefix("state."): v for k, v in artifact.items() if k.startswith("state.")}


def samples_per_round(params: dict[str, Any]) -> int:
    """Labelled samples (= queries) per round: each generated image, and its mirror if labelled."""
    return params["batch_size"] * (2 if params["label_mirrors"] else 1)


def initialize_student(teacher_api: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Round 0: a randomly initialised student and an empty pool.

    Fails before any work when the planned queries alone exceed the budget.
    """
    planned = params["rounds"] * samples_per_round(params)
    budget = params["teacher_access"]["max_queries"]
    if planned > budget:
        raise ValueError(
            f"the run plans {planned} queries (rounds {params['rounds']} x {samples_per_round(params)} samples "
            f"per round) but teacher_access.max_queries is {budget}: lower rounds or batch_size, or raise the budget"
        )
    torch.manual_seed(params["seed"])
    student = build_student(params["student"]["architecture"], teacher_api)
    summary = {"round": 0, "pool_size": 0, "queries_used": 0, "class_counts": [0] * int(teacher_api["num_classes"])}
    return state_to_tensors(student), summary


def train_round_generator(
    student_state: dict[str, torch.Tensor],
    previous_summary: dict[str, Any],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    previous_generator: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Stage 1 (zero queries): a generator trained against the frozen current student.

    Fresh each round (IDEAL), or, with `generator.reinitialize: false`, continued from the
    previous round's kept generator (an ablation).
    """
    set_threads(params.get("num_threads"))
    round_index = previous_summary["round"] + 1
    channels, size, _ = input_shape(teacher_api)
    student = load_student(params["student"]["architecture"], teacher_api, student_state)
    targets = round_targets(params["generator"]["target_sampling"], params["batch_size"], previous_summary["class_counts"])
    settings = _generator_settings(params)
    initial_state = None if settings.reinitialize or previous_generator is None else _generator_state(previous_generator)
    started = time.perf_counter()
    result = train_generator(
        student, targets, settings, size, channels,
        seed=params["seed"] * 100_003 + round_index, device=resolve_device(params["device"]), initial_state=initial_state,
    )  # fmt: skip
    artifact = {f"state.{k}": v for k, v in result.state_dict.items()}
    artifact.update(noise=result.noise, targets=result.targets)
    log = {
        "round": round_index,
        "losses": result.losses,
        "best_loss": min(result.losses),
        "best_step": result.best_step,
        "seconds": time.perf_counter() - started,
    }
    return artifact, log


def materialize_synthetic(generator: dict[str, torch.Tensor], teacher_api: dict[str, Any], params: dict[str, Any]) -> torch.Tensor:
    """The round's synthetic samples as stored uint8 images (N, C, H, W).

    With `label_mirrors`, each image's horizontal mirror follows it as a sample of its own:
    a mirror is a new image that the teacher must label (one more query).
    """
    channels, size, _ = input_shape(teacher_api)
    images = quantize(
        generate_images(_generator_state(generator), generator["noise"], _generator_settings(params), size, channels, resolve_device(params["device"]))
    )
    if params["label_mirrors"]:
        images = torch.cat([images, images.flip(-1)])
    return images


def label_with_teacher(
    synthetic_images: torch.Tensor,
    teacher_api: dict[str, Any],
    query_ledger: QueryLedger,
    params: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One query per new synthetic sample, through the counted, budgeted, persisted client."""
    access = params["teacher_access"]
    teacher = accounted_teacher(access, teacher_api, query_ledger, max_queries=access["max_queries"])
    started = time.perf_counter()
    labels = teacher.label(synthetic_images)
    receipt = {
        "samples": len(labels),
        "queries_paid_now": teacher.queries_sent,
        "labels_reused_from_ledger": len(labels) - teacher.queries_sent,
        "ledger_paid_total": query_ledger.paid_queries(),
        "max_queries": access["max_queries"],
        "seconds": time.perf_counter() - started,
    }
    return labels, receipt


def distill_student(
    student_state: dict[str, torch.Tensor],
    previous_summary: dict[str, Any],
    generator_log: dict[str, Any],
    labelling_receipt: dict[str, Any],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    *pool: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Stage 2 (zero queries): one pass of the student over the whole labelled pool so far.

    `pool` is (images_1, labels_1, ..., images_r, labels_r), every round up to this one.
    """
    set_threads(params.get("num_threads"))
    round_index = previous_summary["round"] + 1
    images, labels = torch.cat(pool[0::2]), torch.cat(pool[1::2])
    student = load_student(params["student"]["architecture"], teacher_api, student_state)
    started = time.perf_counter()
    losses = distill(
        student, images, labels, settings_from(DistillSettings, params["distill"], "ideal.distill"),
        seed=params["seed"] * 100_003 + round_index, device=resolve_device(params["device"]),
    )  # fmt: skip
    new_labels = pool[-1]
    counts = torch.tensor(previous_summary["class_counts"]) + torch.bincount(new_labels, minlength=len(previous_summary["class_counts"]))
    summary = {
        "round": round_index,
        "pool_size": len(labels),
        "queries_used": previous_summary["queries_used"] + len(new_labels),
        "class_counts": counts.tolist(),
        "distill_loss": losses[-1],
        "generator_loss": generator_log["best_loss"],
        "generation_seconds": generator_log["seconds"],
        "labelling_seconds": labelling_receipt["seconds"],
        "distill_seconds": time.perf_counter() - started,
        "queries_paid_now": labelling_receipt["queries_paid_now"],
    }
    logger.info(
        "round %d/%d | queries %d (paid now %d) | generator loss %.3f | distill loss %.3f | %.1f s",
        round_index, params["rounds"], summary["queries_used"], summary["queries_paid_now"],
        summary["generator_loss"], summary["distill_loss"],
        generator_log["seconds"] + labelling_receipt["seconds"] + summary["distill_seconds"],
    )  # fmt: skip
    return state_to_tensors(student.cpu()), summary
