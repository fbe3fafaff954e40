"""IDEAL's own step of a round: a generator trained against the frozen current student (zero queries).

The rest of a round (labelling, distillation) is shared with the baselines (`ideal_pipeline.rounds`).
"""

from __future__ import annotations

from typing import Any

import torch

from ideal_pipeline.compute import resolve_compute
from ideal_pipeline.ideal import generation
from ideal_pipeline.ideal.targets import round_targets
from ideal_pipeline.models.students import input_shape, load_student
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
    previous round's kept generator.
    """
    resolved = resolve_compute(compute)
    round_index = next_round(previous_summary)
    channels, size, _ = input_shape(teacher_api)
    model = load_student(student.architecture, teacher_api, student_state)
    targets = round_targets(settings, batch_size, previous_summary["class_counts"])
    initial_state = None
    if previous_generator is not None:
        initial_state = {k.removeprefix("state."): v for k, v in previous_generator.items() if k.startswith("state.")}
    result = generation.train_generator(
        model, targets, settings, size, channels, round_seed(seed, round_index), resolved, initial_state
    )
    log = {
        "round": round_index,
        "losses": result.losses,
        "generator_steps": len(result.losses),
        "best_loss": min(result.losses),
        "best_step": result.best_step,
        "targets": targets.tolist(),
    }
    return generator_artifact(result.state_dict, result.noise, result.targets), log
