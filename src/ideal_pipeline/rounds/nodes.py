"""The nodes every method's rounds share: plan the spend, start the student, buy labels, distil.

A round's state travels between rounds as artifacts: the student's state dict and the
`pool_summary` (round number, class counts of the teacher's labels so far, queries, the run's
budget scope). Only the image source differs between methods (`pipelines/ideal`, `pipelines/baselines`).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import torch

from ideal_pipeline.compute import Compute, resolve_compute, signature
from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPool
from ideal_pipeline.ideal.distillation import distill, round_learning_rate
from ideal_pipeline.ideal.generation import generate_images
from ideal_pipeline.models.images import quantize
from ideal_pipeline.models.students import (
    AVERAGE_PREFIX,
    MOMENTUM_PREFIX,
    RIVAL_PREFIX,
    build_student,
    input_shape,
    load_student,
    split_rival,
    state_to_tensors,
)
from ideal_pipeline.parameter_schema import (
    ComputeParams,
    DistillParams,
    GeneratorParams,
    StudentParams,
    TeacherAccessParams,
)
from ideal_pipeline.teacher.blackbox import check_planned_spend
from ideal_pipeline.teacher.connect import accounted_teacher
from ideal_pipeline.teacher.label_store import LabelStore

Card = dict[str, Any]  # the teacher's API card: input shape, classes, where it answers
Summary = dict[str, Any]  # a round's pool summary: round, queries, class counts, budget scope
Weights = dict[str, torch.Tensor]  # a model's state dict (a student may carry its momentum too)
Split = dict[str, torch.Tensor]  # real images: uint8 "images" (N, C, H, W), int64 "labels" (N,)


def samples_per_round(batch_size: int, label_mirrors: bool) -> int:
    """Labelled samples (= queries) per round: each generated image, and its mirror if labelled."""
    return batch_size * (2 if label_mirrors else 1)


def round_seed(seed: int, round_index: int) -> int:
    """The seed of one round of a run: distinct per round and per run seed, the same on every rerun."""
    return seed * 100_003 + round_index


# The rival student's seeds (`student.rival`): a stream of their own, numpy's SeedSequence of (this tag, the
# student's seed), so the rival neither starts nor draws its batches as the student does.
RIVAL_STREAM = 0x21FA1


def rival_seed(seed: int) -> int:
    return int(np.random.SeedSequence([RIVAL_STREAM, seed]).generate_state(1)[0])


def next_round(previous_summary: dict[str, Any]) -> int:
    return int(previous_summary["round"]) + 1


def run_identity(method: str, ideal: dict[str, Any], compute: ComputeParams) -> str:
    """What a run's paid labels are bought for: `ideal/seed=0/run=1a2b3c4d/` (its budget scope).

    The hash covers everything that decides the run's images (the method, every IDEAL parameter
    but the teacher access, and the compute as resolved on this machine: another CPU or precision
    rounds differently), so a rerun of the same run finds its own labels again and a changed run
    gets a budget of its own.
    """
    settings = {key: value for key, value in ideal.items() if key != "teacher_access"}
    resolved = signature(resolve_compute(compute, apply_threads=False))
    # Sections Kedro handed over typed are written as the plain values they were read from.
    text = json.dumps(
        {"method": method, "ideal": settings, "compute": resolved}, sort_keys=True, default=lambda v: v.model_dump()
    )
    return f"{method}/seed={ideal['seed']}/run={hashlib.sha256(text.encode()).hexdigest()[:8]}/"


def plan_queries(
    method: str, paid_labels: LabelStore, teacher_api: dict[str, Any], ideal: dict[str, Any], compute: ComputeParams
) -> dict[str, Any]:
    """Round 0: the teacher checked, and the run's planned queries against its budget, before any work.

    The budget (`teacher_access.max_queries`) is what this run may pay over all its attempts.
    A rerun of the same run reuses what it paid; labels bought by other runs are reused too but
    are not counted on in advance, so a run that passes this check never stops for budget midway.
    """
    access = TeacherAccessParams.model_validate(ideal["teacher_access"])
    planned = ideal["rounds"] * samples_per_round(ideal["batch_size"], ideal["label_mirrors"])
    scope = run_identity(method, ideal, compute)
    teacher = accounted_teacher(access, teacher_api, paid_labels, access.max_queries, budget_scope=scope)
    check_planned_spend(planned, teacher.ledger.spent_queries(scope), access.max_queries, scope)
    return {"method": method, "budget_scope": scope, "planned_queries": planned, "max_queries": access.max_queries}


def initialize_student(
    query_plan: dict[str, Any], teacher_api: dict[str, Any], student: StudentParams, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Round 0: a randomly initialised student (and its rival, with `student.rival`) and an empty pool."""
    torch.manual_seed(seed)
    model = build_student(student.architecture, teacher_api)
    state = state_to_tensors(model)
    if student.rival:
        torch.manual_seed(rival_seed(seed))
        state |= {
            RIVAL_PREFIX + k: v for k, v in state_to_tensors(build_student(student.architecture, teacher_api)).items()
        }
    summary = {
        "method": query_plan["method"],
        "budget_scope": query_plan["budget_scope"],
        "round": 0,
        "pool_size": 0,
        "queries_used": 0,
        "planned_queries": query_plan["planned_queries"],
        "class_counts": [0] * int(teacher_api["num_classes"]),
    }
    return state, summary


def label_with_teacher(
    synthetic_images: torch.Tensor,
    previous_summary: Summary,
    teacher_api: Card,
    paid_labels: LabelStore,
    access: TeacherAccessParams,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One query per new sample, through the counted, budgeted, persisted client.

    The labels also go to the store's travelling copy (a DVC output). The receipt records what
    this run paid and how long it took: a record of the run, not a result (a rerun pays
    nothing), so DVC does not hash it (.dvcignore).
    """
    round_index = next_round(previous_summary)
    scope = previous_summary["budget_scope"]
    teacher = accounted_teacher(access, teacher_api, paid_labels, access.max_queries, budget_scope=scope)
    started = time.perf_counter()
    labels = teacher.label(synthetic_images, tag=f"{scope}round={round_index:03d}")
    paid_labels.export(teacher.fingerprint, synthetic_images, labels)
    receipt = {
        "round": round_index,
        "samples": len(labels),
        "queries_paid_now": teacher.queries_sent,
        "labels_reused_from_ledger": len(labels) - teacher.queries_sent,
        "run_spent": teacher.ledger.spent_queries(scope),
        "ledger_paid_total": teacher.ledger.paid_queries(),
        "max_queries": access.max_queries,
        "seconds": time.perf_counter() - started,
    }
    return labels, receipt


def _target_hit_rate(targets: list[int] | None, labels: torch.Tensor) -> float | None:
    """Share of the generated images (not their mirrors) the teacher labelled as the student was asked
    (a target of -1: an image asked for no class, not counted)."""
    asked = torch.tensor(targets or [])
    if not (asked >= 0).any():
        return None
    return (labels[: len(asked)][asked >= 0] == asked[asked >= 0]).float().mean().item()


def distill_student(
    student_state: Weights,
    previous_summary: Summary,
    labelled_pool: LabelledPool,
    synthetic_images: torch.Tensor,
    teacher_labels: torch.Tensor,
    image_source_log: dict[str, Any],
    teacher_api: Card,
    settings: DistillParams,
    student: StudentParams,
    rounds: int,
    seed: int,
    compute: ComputeParams,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """IDEAL stage 2 (zero queries): the student on the whole labelled pool so far.

    The earlier rounds' samples come from the pool (read once per process); this round's are
    the node's own inputs. With `keep_optimizer`, SGD's momentum travels with the student, as
    the reference code's one optimiser for the whole run does; with `weight_average`, so does the
    moving average of its weights. With `student.rival`, the rival is distilled as the student is, on the
    same pool, with its own seed.
    """
    round_index = next_round(previous_summary)
    earlier_images, earlier_labels = labelled_pool.load(round_index - 1)
    if len(earlier_labels) != previous_summary["pool_size"]:
        raise ValueError(
            f"the pool of rounds 1-{round_index - 1} holds {len(earlier_labels)} samples but round "
            f"{round_index - 1}'s summary says {previous_summary['pool_size']}: rerun the earlier rounds"
        )
    labels = torch.cat([earlier_labels, teacher_labels])
    images = torch.cat([earlier_images, synthetic_images])
    lr = round_learning_rate(settings, round_index, rounds)
    resolved = resolve_compute(compute)
    own, rival = split_rival(student_state)
    distilled, losses = _distill_artifact(
        own, images, labels, teacher_api, settings, student, round_seed(seed, round_index), resolved, lr
    )
    if student.rival:
        if not rival:
            raise ValueError(
                f"student.rival is on but round {round_index - 1}'s student has no rival: "
                "rerun the method from its initialize_student node"
            )
        rival_round_seed = rival_seed(round_seed(seed, round_index))
        rival, _ = _distill_artifact(
            rival, images, labels, teacher_api, settings, student, rival_round_seed, resolved, lr
        )
        distilled |= {RIVAL_PREFIX + k: v for k, v in rival.items()}
    counts = torch.tensor(previous_summary["class_counts"]) + torch.bincount(
        teacher_labels, minlength=len(previous_summary["class_counts"])
    )
    summary = {
        "method": previous_summary["method"],
        "budget_scope": previous_summary["budget_scope"],
        "round": round_index,
        "pool_size": len(labels),
        "queries_used": previous_summary["queries_used"] + len(teacher_labels),
        "planned_queries": previous_summary["planned_queries"],
        "class_counts": counts.tolist(),
        "smallest_class_count": int(counts.min()),
        "target_hit_rate": _target_hit_rate(image_source_log.get("targets"), teacher_labels),
        "distill_loss": losses[-1],
        "distill_lr": lr,
        "generator_loss": image_source_log.get("best_loss"),
        "generator_steps": image_source_log.get("generator_steps"),
    }
    return distilled, summary


def _distill_artifact(
    state: Weights,
    images: torch.Tensor,
    labels: torch.Tensor,
    teacher_api: Card,
    settings: DistillParams,
    student: StudentParams,
    seed: int,
    compute: Compute,
    lr: float,
) -> tuple[Weights, list[float]]:
    """One student artifact (weights, momentum, moving average) distilled on the pool; its losses."""
    model = load_student(student.architecture, teacher_api, state)
    momentum = {k.removeprefix(MOMENTUM_PREFIX): v for k, v in state.items() if k.startswith(MOMENTUM_PREFIX)}
    average = {k.removeprefix(AVERAGE_PREFIX): v for k, v in state.items() if k.startswith(AVERAGE_PREFIX)}
    losses = distill(
        model,
        images,
        labels,
        settings,
        seed=seed,
        compute=compute,
        momentum=momentum if settings.keep_optimizer else None,
        lr=lr,
        average=average,
    )
    kept = {MOMENTUM_PREFIX + k: v for k, v in momentum.items()} if settings.keep_optimizer else {}
    kept |= {AVERAGE_PREFIX + k: v for k, v in average.items()}
    return {**state_to_tensors(model.cpu()), **kept}, losses


def materialize_synthetic(
    generator: Weights,
    teacher_api: Card,
    settings: GeneratorParams,
    label_mirrors: bool,
    compute: ComputeParams,
) -> torch.Tensor:
    """A generator's round of images as stored uint8 samples (N, C, H, W), each image's mirror after the
    originals when mirrors are labelled: a flip is a new image, a new query. Where the round chose
    among candidates (`selected`), only the chosen ones."""
    channels, size, _ = input_shape(teacher_api)
    state = {k.removeprefix("state."): v for k, v in generator.items() if k.startswith("state.")}
    batch = len(generator["targets"])
    images = generate_images(state, generator["noise"], settings, size, channels, resolve_compute(compute), batch)
    images = quantize(images[generator["selected"]] if "selected" in generator else images)
    return torch.cat([images, images.flip(-1)]) if label_mirrors else images


def generator_artifact(state: dict[str, torch.Tensor], noise: torch.Tensor, targets: torch.Tensor) -> dict:
    """A round's generator as one artifact: its weights (`state.*`), its noise and its targets."""
    return {**{f"state.{k}": v for k, v in state.items()}, "noise": noise, "targets": targets}
