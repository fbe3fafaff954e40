"""IDEAL's own step of a round: a generator trained against the frozen current student (zero queries).

The rest of a round (labelling, distillation) is shared with the baselines (`ideal_pipeline.rounds`).
"""

from __future__ import annotations

from typing import Any

import torch

from ideal_pipeline.compute import resolve_compute
from ideal_pipeline.ideal import generation, selection
from ideal_pipeline.ideal.targets import round_targets
from ideal_pipeline.models.images import quantize
from ideal_pipeline.models.students import input_shape, load_student, split_rival
from ideal_pipeline.parameter_schema import ComputeParams, GeneratorParams, StudentParams
from ideal_pipeline.rounds.nodes import Card, Summary, Weights, generator_artifact, next_round, round_seed


def train_generator(
    student_state: Weights,
    previous_summary: Summary,
    teacher_api: Card,
    settings: GeneratorParams,
    student: StudentParams,
    batch_size: int,
    seed: int,
    compute: ComputeParams,
    previous_generator: Weights | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """IDEAL stage 1: the targets the round asks for (steered towards the classes the teacher gave
    least), and a generator trained to make the student answer them.

    Fresh each round (IDEAL), or, with `generator.reinitialize: false`, continued from the
    previous round's kept generator. With `generator.candidates` above 1, the kept generator also
    makes the candidates the round chooses its images from (`ideal.selection`), with no query, from
    round `generator.candidates_from_round` on: an earlier round buys its generator's own batch.
    With `student.rival`, the student's rival (carried in its artifact) joins the choice among candidates
    (their mean prediction) and, with `generator.disagreement_weight`, the generator is also paid for
    images the two disagree on.
    """
    resolved = resolve_compute(compute)
    round_index = next_round(previous_summary)
    channels, size, _ = input_shape(teacher_api)
    model = load_student(student.architecture, teacher_api, student_state)
    needs_rival = student.rival or settings.disagreement_weight
    rival = _rival(student.architecture, teacher_api, student_state, round_index) if needs_rival else None
    targets = round_targets(settings, batch_size, previous_summary["class_counts"])
    initial_state = None
    if previous_generator is not None:
        initial_state = {k.removeprefix("state."): v for k, v in previous_generator.items() if k.startswith("state.")}
    result = generation.train_generator(
        model,
        targets,
        settings,
        size,
        channels,
        round_seed(seed, round_index),
        resolved,
        initial_state,
        rival if settings.disagreement_weight else None,
    )
    artifact = generator_artifact(result.state_dict, result.noise, result.targets)
    asked = targets
    if settings.candidates > 1 and round_index >= settings.candidates_from_round:
        noise = selection.candidate_noise(result.noise, settings.candidates, round_seed(seed, round_index))
        candidates = generation.generate_images(
            result.state_dict, noise, settings, size, channels, resolved, batch_size=len(targets)
        )
        quota, likeliest = selection.candidate_quota(
            settings.candidate_quota, targets, previous_summary["class_counts"]
        )
        chosen = selection.choose_images(
            model, quantize(candidates), len(targets), resolved, quota, likeliest, rival=rival
        )
        artifact |= {"noise": noise, "selected": chosen}
        # Fresh-noise images were asked for no class (-1): the hit rate counts only the kept batch's.
        asked = torch.cat([targets, torch.full((len(noise) - len(targets),), -1)])[chosen]
    log = {
        "round": round_index,
        "losses": result.losses,
        "generator_steps": len(result.losses),
        "best_loss": min(result.losses),
        "best_step": result.best_step,
        "targets": asked.tolist(),
    }
    return artifact, log


def _rival(architecture: str, teacher_api: Card, student_state: Weights, round_index: int) -> torch.nn.Module:
    _, rival = split_rival(student_state)
    if not rival:
        raise ValueError(
            f"round {round_index - 1}'s student has no rival (student.rival, which generator.disagreement_weight "
            "needs): rerun the method from its initialize_student node with student.rival: true"
        )
    return load_student(architecture, teacher_api, rival)
