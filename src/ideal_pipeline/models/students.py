"""A student shaped for the teacher's API card, and its weights as tensors (the artifact format)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ideal_pipeline.models.classifiers import build_classifier

# A student artifact may also hold its optimiser's momentum (keys `momentum.<parameter>`), a
# moving average of its weights (keys `average.<state key>`, `distill.weight_average`) and a rival
# student with its own (keys `rival.<key of the rival's artifact>`, `student.rival`).
MOMENTUM_PREFIX = "momentum."
AVERAGE_PREFIX = "average."
RIVAL_PREFIX = "rival."


def split_rival(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the student's own artifact, its rival's artifact: empty when it has none), each laid out as a
    student artifact."""
    own = {k: v for k, v in state.items() if not k.startswith(RIVAL_PREFIX)}
    rival = {k.removeprefix(RIVAL_PREFIX): v for k, v in state.items() if k.startswith(RIVAL_PREFIX)}
    return own, rival


def input_shape(api_card: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the images the teacher takes; square images only."""
    channels, height, width = api_card["input_shape"]
    if height != width:
        raise ValueError(f"square images only, the teacher's input shape is {api_card['input_shape']}")
    return channels, height, width


def build_student(architecture: str, api_card: dict[str, Any]) -> nn.Module:
    """A student shaped for the teacher's API (input shape and classes from its card)."""
    channels, size, _ = input_shape(api_card)
    return build_classifier(architecture, channels, int(api_card["num_classes"]), size)


def load_student(
    architecture: str, api_card: dict[str, Any], state: dict[str, torch.Tensor], averaged: bool = False
) -> nn.Module:
    """The student SGD trained, or with `averaged` the moving average of its weights where the artifact
    keeps one (the student a run scores and hands on; the generator trains against SGD's). A rival the
    artifact carries is left out: `split_rival` gives its artifact."""
    state, _ = split_rival(state)
    student = build_student(architecture, api_card)
    average = {k.removeprefix(AVERAGE_PREFIX): v for k, v in state.items() if k.startswith(AVERAGE_PREFIX)}
    if averaged and average:
        student.load_state_dict(average)
    else:
        student.load_state_dict({k: v for k, v in state.items() if not k.startswith((MOMENTUM_PREFIX, AVERAGE_PREFIX))})
    return student


def state_to_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
