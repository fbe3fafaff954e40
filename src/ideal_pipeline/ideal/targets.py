"""Class targets the generator is asked to produce in a round."""

from __future__ import annotations

import torch

TARGET_SAMPLINGS = ("balanced", "steered")


def balanced_targets(batch_size: int, num_classes: int) -> torch.Tensor:
    """[0, 1, ..., C-1] repeated: every class equally often (the reference code)."""
    if batch_size % num_classes:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of classes ({num_classes}) "
            "for balanced targets"
        )
    return torch.arange(num_classes).repeat(batch_size // num_classes)


def steered_targets(batch_size: int, class_counts: list[int]) -> torch.Tensor:
    """Targets allotted inversely to how often the teacher has given each class so far.

    A class the teacher never assigns cannot be learned, so rare classes get more of the
    generator's batch. Allotment is deterministic (largest remainder); with no counts yet it
    equals the balanced allotment.
    """
    counts = torch.tensor(class_counts, dtype=torch.float64)
    weights = 1.0 / (counts + 1.0)
    shares = weights / weights.sum() * batch_size
    allotted = shares.floor().long()
    remainder = batch_size - int(allotted.sum())
    if remainder:
        order = torch.argsort(shares - allotted, descending=True, stable=True)
        allotted[order[:remainder]] += 1
    return torch.repeat_interleave(torch.arange(len(class_counts)), allotted)


def round_targets(sampling: str, batch_size: int, class_counts: list[int]) -> torch.Tensor:
    if sampling == "balanced":
        return balanced_targets(batch_size, len(class_counts))
    if sampling == "steered":
        return steered_targets(batch_size, class_counts)
    raise ValueError(f"unknown target sampling {sampling!r}; choose one of {TARGET_SAMPLINGS}")
