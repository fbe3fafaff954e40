"""Small helpers shared by the nodes: devices, threads, seeds, model (de)serialisation."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ideal_pipeline.models.classifiers import build_classifier


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device: cpu or auto")
    return device


def set_threads(num_threads: int | None) -> None:
    """0 or None leaves torch's default (one thread per core)."""
    if num_threads:
        torch.set_num_threads(int(num_threads))


def input_shape(api_card: dict[str, Any]) -> tuple[int, int, int]:
    channels, height, width = api_card["input_shape"]
    if height != width:
        raise ValueError(f"square images only, the teacher's input shape is {api_card['input_shape']}")
    return channels, height, width


def build_student(architecture: str, api_card: dict[str, Any]) -> nn.Module:
    """A student shaped for the teacher's API (input shape and classes from its card)."""
    channels, size, _ = input_shape(api_card)
    return build_classifier(architecture, channels, int(api_card["num_classes"]), size)


def state_to_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_student(architecture: str, api_card: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    student = build_student(architecture, api_card)
    student.load_state_dict(state)
    return student


def settings_from(cls, values: dict[str, Any], section: str, ignore: tuple[str, ...] = ()):
    """Build a settings dataclass; an unknown parameter name is an error that names it."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - known - set(ignore)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} in {section}; known: {sorted(known | set(ignore))}")
    return cls(**{k: v for k, v in values.items() if k in known})


def round_seed(seed: int, round_index: int) -> int:
    """The seed of one round of a run: distinct per round and per run seed, the same on every rerun."""
    return seed * 100_003 + round_index
