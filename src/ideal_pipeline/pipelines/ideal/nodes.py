"""Nodes of a method's rounds: thin adapters around `ideal_pipeline.ideal`.

A round's state travels between rounds as artifacts: the student's state dict and the
`pool_summary` (round number, class counts of the teacher's labels so far, queries).
The image sources of the baselines (noise, an untrained generator, real images) live here
beside IDEAL's, so every method goes through the same labelling and distillation nodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

import torch

from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPool
from ideal_pipeline.ideal import generation
from ideal_pipeline.ideal.distillation import DistillSettings, distill, round_learning_rate
from ideal_pipeline.ideal.targets import round_targets
from ideal_pipeline.models.generator import Generator
from ideal_pipeline.runtime import (
    MOMENTUM_PREFIX,
    build_student,
    compute_signature,
    input_shape,
    load_student,
    round_seed,
    settings_from,
    state_to_tensors,
    use_compute,
)
from ideal_pipeline.teacher.blackbox import check_planned_spend
from ideal_pipeline.teacher.connect import accounted_teacher
from ideal_pipeline.teacher.label_store import LabelStore

logger = logging.getLogger(__name__)


def _generator_settings(params: dict[str, Any]) -> generation.GeneratorSettings:
    settings = settings_from(
        generation.GeneratorSettings,
        params,
        "ideal.generator",
        ignore=("target_sampling", "target_prior", "target_cap"),
    )
    settings.betas = tuple(settings.betas)
    return settings


def _generator_state(artifact: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator's weights out of its artifact (which also holds its noise and targets)."""
    return {k.removeprefix("state."): v for k, v in artifact.items() if k.startswith("state.")}


def _generator_artifact(state: dict[str, torch.Tensor], noise: torch.Tensor, targets: torch.Tensor) -> dict:
    return {**{f"state.{k}": v for k, v in state.items()}, "noise": noise, "targets": targets}


def samples_per_round(batch_size: int, label_mirrors: bool) -> int:
    """Labelled samples (= queries) per round: each generated image, and its mirror if labelled."""
    return batch_size * (2 if label_mirrors else 1)


def _next_round(previous_summary: dict[str, Any]) -> int:
    return int(previous_summary["round"]) + 1


def run_identity(method: str, ideal: dict[str, Any], compute: dict[str, Any]) -> str:
    """What a run's paid labels are bought for: `ideal/seed=0/run=1a2b3c4d/` (its budget scope).

    The hash covers everything that decides the run's images (the method, every IDEAL parameter
    but the teacher access, and the compute as resolved on this machine: another CPU or precision
    rounds differently), so a rerun of the same run finds its own labels again and a changed run
    gets a budget of its own.
    """
    settings = {key: value for key, value in ideal.items() if key != "teacher_access"}
    signature = json.dumps({"method": method, "ideal": settings, "compute": compute_signature(compute)}, sort_keys=True)
    return f"{method}/seed={ideal['seed']}/run={hashlib.sha256(signature.encode()).hexdigest()[:8]}/"


def plan_queries(
    method: str,
    paid_labels: LabelStore,
    teacher_api: dict[str, Any],
    ideal: dict[str, Any],
    compute: dict[str, Any],
) -> dict[str, Any]:
    """Round 0: the teacher checked, and the run's planned queries against its budget, before any work.

    The budget (`teacher_access.max_queries`) is what this run may pay over all its attempts.
    A rerun of the same run reuses what it paid; labels bought by other runs are reused too but
    are not counted on in advance, so a run that passes this check never stops for budget midway.
    """
    access = ideal["teacher_access"]
    planned = ideal["rounds"] * samples_per_round(ideal["batch_size"], ideal["label_mirrors"])
    scope = run_identity(method, ideal, compute)
    teacher = accounted_teacher(access, teacher_api, paid_labels, access["max_queries"], budget_scope=scope)
    spent = teacher.ledger.spent_queries(scope)
    check_planned_spend(planned, spent, access["max_queries"], scope)
    return {"method": method, "budget_scope": scope, "planned_queries": planned, "max_queries": access["max_queries"]}


def initialize_student(
    query_plan: dict[str, Any], teacher_api: dict[str, Any], student_params: dict[str, Any], seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Round 0: a randomly initialised student and an empty pool."""
    torch.manual_seed(seed)
    student = build_student(student_params["architecture"], teacher_api)
    summary = {
        "method": query_plan["method"],
        "budget_scope": query_plan["budget_scope"],
        "round": 0,
        "pool_size": 0,
        "queries_used": 0,
        "planned_queries": query_plan["planned_queries"],
        "class_counts": [0] * int(teacher_api["num_classes"]),
    }
    return state_to_tensors(student), summary


# ------------------------------------------------------------------------------ image sources


def train_generator(
    student_state: dict[str, torch.Tensor],
    previous_summary: dict[str, Any],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    student_params: dict[str, Any],
    batch_size: int,
    seed: int,
    compute: dict[str, Any],
    previous_generator: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """IDEAL stage 1 (zero queries): a generator trained against the frozen current student.

    Fresh each round (IDEAL), or, with `generator.reinitialize: false`, continued from the
    previous round's kept generator (an ablation).
    """
    device, precision = use_compute(compute)
    round_index = _next_round(previous_summary)
    channels, size, _ = input_shape(teacher_api)
    student = load_student(student_params["architecture"], teacher_api, student_state)
    prior = None if params["target_prior"] == "auto" else params["target_prior"]
    targets = round_targets(
        params["target_sampling"], batch_size, previous_summary["class_counts"], prior, params["target_cap"]
    )
    settings = _generator_settings(params)
    initial_state = None if previous_generator is None else _generator_state(previous_generator)
    result = generation.train_generator(
        student,
        targets,
        settings,
        size,
        channels,
        seed=round_seed(seed, round_index),
        device=device,
        initial_state=initial_state,
        precision=precision,
    )
    log = {
        "round": round_index,
        "losses": result.losses,
        "generator_steps": len(result.losses),
        "best_loss": min(result.losses),
        "best_step": result.best_step,
        "targets": targets.tolist(),
    }
    return _generator_artifact(result.state_dict, result.noise, result.targets), log


def initialize_generator(
    previous_summary: dict[str, Any],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    batch_size: int,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Baseline: IDEAL's generator freshly initialised and never trained (what training adds)."""
    round_index = _next_round(previous_summary)
    channels, size, _ = input_shape(teacher_api)
    with torch.random.fork_rng(devices=[]):  # Generator() initialises from the global RNG
        torch.manual_seed(round_seed(seed, round_index))
        state = Generator(params["nz"], params["ngf"], size, channels).state_dict()
    noise = torch.randn(
        batch_size, params["nz"], generator=torch.Generator().manual_seed(round_seed(seed, round_index))
    )
    log = {"round": round_index, "targets": None}
    return _generator_artifact(state, noise, torch.zeros(batch_size, dtype=torch.int64)), log


def _with_mirrors(images: torch.Tensor, label_mirrors: bool) -> torch.Tensor:
    """Each image's horizontal mirror follows it as a sample of its own: a new image, a new query."""
    return torch.cat([images, images.flip(-1)]) if label_mirrors else images


def materialize_synthetic(
    generator: dict[str, torch.Tensor],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    label_mirrors: bool,
    compute: dict[str, Any],
) -> torch.Tensor:
    """The round's synthetic samples as stored uint8 images (N, C, H, W), mirrors after the originals."""
    channels, size, _ = input_shape(teacher_api)
    device, precision = use_compute(compute)
    images = generation.generate_images(
        _generator_state(generator),
        generator["noise"],
        _generator_settings(params),
        size,
        channels,
        device,
        precision=precision,
    )
    return _with_mirrors(generation.quantize(images), label_mirrors)


def _noise_images(kind: str, teacher_api, previous_summary, batch_size, label_mirrors, seed):
    round_index = _next_round(previous_summary)
    rng = torch.Generator().manual_seed(round_seed(seed, round_index))
    shape = (samples_per_round(batch_size, label_mirrors), *input_shape(teacher_api))
    if kind == "uniform":
        pixels = torch.rand(shape, generator=rng)
    else:  # centred in the pixel range, wide enough to reach both ends; quantize clips to [0, 1]
        pixels = 0.5 + 0.25 * torch.randn(shape, generator=rng)
    return generation.quantize(pixels), {"round": round_index, "targets": None}


def draw_uniform_noise(teacher_api, previous_summary, batch_size, label_mirrors, seed):
    """Baseline: U(0, 1) pixels, as many samples per round as IDEAL labels."""
    return _noise_images("uniform", teacher_api, previous_summary, batch_size, label_mirrors, seed)


def draw_gaussian_noise(teacher_api, previous_summary, batch_size, label_mirrors, seed):
    """Baseline: N(0.5, 0.25^2) pixels clipped to [0, 1], as many samples per round as IDEAL labels."""
    return _noise_images("gaussian", teacher_api, previous_summary, batch_size, label_mirrors, seed)


def sample_real_images(
    real_train: dict[str, torch.Tensor],
    previous_summary: dict[str, Any],
    batch_size: int,
    label_mirrors: bool,
    seed: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Upper bound: real training images in a seeded order, as many per round as IDEAL labels.

    Past the end of the set they repeat; the ledger labels a repeat for free, so the queries
    paid then stop at the set's size (reported, not hidden).
    """
    round_index = _next_round(previous_summary)
    count, per_round = len(real_train["labels"]), samples_per_round(batch_size, label_mirrors)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    positions = torch.arange((round_index - 1) * per_round, round_index * per_round) % count
    return real_train["images"][order[positions]], {"round": round_index, "targets": None}


# ------------------------------------------------------------------------------ labelling and distillation


def label_with_teacher(
    synthetic_images: torch.Tensor,
    previous_summary: dict[str, Any],
    teacher_api: dict[str, Any],
    paid_labels: LabelStore,
    access: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One query per new sample, through the counted, budgeted, persisted client.

    The labels also go to the store's travelling copy (a DVC output). The receipt records what
    this run paid and how long it took: a record of the run, not a result (a rerun pays
    nothing), so DVC does not hash it (.dvcignore).
    """
    round_index = _next_round(previous_summary)
    scope = previous_summary["budget_scope"]
    teacher = accounted_teacher(access, teacher_api, paid_labels, access["max_queries"], budget_scope=scope)
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
        "max_queries": access["max_queries"],
        "seconds": time.perf_counter() - started,
    }
    return labels, receipt


def _target_hit_rate(targets: list[int] | None, labels: torch.Tensor) -> float | None:
    """Share of the generated images (not their mirrors) the teacher labelled as the student was asked."""
    if not targets:
        return None
    return (labels[: len(targets)] == torch.tensor(targets)).float().mean().item()


def distill_student(
    student_state: dict[str, torch.Tensor],
    previous_summary: dict[str, Any],
    labelled_pool: LabelledPool,
    synthetic_images: torch.Tensor,
    teacher_labels: torch.Tensor,
    image_source_log: dict[str, Any],
    teacher_api: dict[str, Any],
    params: dict[str, Any],
    student_params: dict[str, Any],
    rounds: int,
    seed: int,
    compute: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """IDEAL stage 2 (zero queries): the student on the whole labelled pool so far.

    The earlier rounds' samples come from the pool (read once per process); this round's are
    the node's own inputs.
    """
    device, precision = use_compute(compute)
    round_index = _next_round(previous_summary)
    earlier_images, earlier_labels = labelled_pool.load(round_index - 1)
    if len(earlier_labels) != previous_summary["pool_size"]:
        raise ValueError(
            f"the pool of rounds 1-{round_index - 1} holds {len(earlier_labels)} samples but round "
            f"{round_index - 1}'s summary says {previous_summary['pool_size']}: rerun the earlier rounds"
        )
    images = torch.cat([earlier_images, synthetic_images])
    labels = torch.cat([earlier_labels, teacher_labels])
    student = load_student(student_params["architecture"], teacher_api, student_state)
    settings = settings_from(DistillSettings, params, "ideal.distill")
    settings = replace(settings, lr=round_learning_rate(settings, round_index, rounds))
    # The reference code keeps one optimiser for the whole run: its momentum travels with the student.
    momentum = {k.removeprefix(MOMENTUM_PREFIX): v for k, v in student_state.items() if k.startswith(MOMENTUM_PREFIX)}
    losses = distill(
        student,
        images,
        labels,
        settings,
        seed=round_seed(seed, round_index),
        device=device,
        precision=precision,
        momentum=momentum if settings.keep_optimizer else None,
    )
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
        "distill_lr": settings.lr,
        "generator_loss": image_source_log.get("best_loss"),
        "generator_steps": image_source_log.get("generator_steps"),
    }
    kept = {MOMENTUM_PREFIX + k: v for k, v in momentum.items()} if settings.keep_optimizer else {}
    return {**state_to_tensors(student.cpu()), **kept}, summary
