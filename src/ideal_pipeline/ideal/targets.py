"""Class targets the generator is asked to produce in a round."""

from __future__ import annotations

import torch

from ideal_pipeline.parameter_schema import GeneratorParams


def balanced_targets(batch_size: int, num_classes: int) -> torch.Tensor:
    """[0, 1, ..., C-1] repeated: every class equally often (the reference code)."""
    if batch_size % num_classes:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of classes ({num_classes}) for balanced targets"
        )
    return torch.arange(num_classes).repeat(batch_size // num_classes)


def _capped_shares(weights: torch.Tensor, total: float, cap: float) -> torch.Tensor:
    """`total` split in proportion to `weights`, no share above `cap` (the excess goes to the others)."""
    shares = torch.zeros_like(weights)
    free = torch.ones_like(weights, dtype=torch.bool)
    remaining = total
    while free.any():
        shares[free] = weights[free] / weights[free].sum() * remaining
        over = free & (shares > cap)
        if not over.any():
            break
        shares[over] = cap
        free &= ~over
        remaining = total - shares[~free].sum().item()
    return shares


def steered_targets(
    batch_size: int, class_counts: list[int], prior: float | None = None, cap: float | None = 3.0
) -> torch.Tensor:
    """Targets allotted inversely to how often the teacher has given each class so far.

    A class the teacher never assigns cannot be learned, so rare classes get more of the
    generator's batch: class k's weight is 1 / (count_k + prior). `prior` (pseudo-counts, default
    B / C) keeps one class with no labels yet from taking most of the batch, and no class gets more
    than `cap` times its balanced share, so a class the generator cannot reach yet does not keep
    absorbing the batch (`prior=1, cap=None` is the rule of the method notes' prototype).
    Allotment is deterministic (largest remainder); with no counts yet it equals the balanced one.
    """
    num_classes = len(class_counts)
    counts = torch.tensor(class_counts, dtype=torch.float64)
    prior = batch_size / num_classes if prior is None else float(prior)
    weights = 1.0 / (counts + prior)
    limit = float(batch_size) if cap is None else cap * batch_size / num_classes
    shares = _capped_shares(weights, float(batch_size), max(limit, batch_size / num_classes))
    allotted = shares.floor().long()
    remainder = batch_size - int(allotted.sum())
    if remainder:
        order = torch.argsort(shares - allotted, descending=True, stable=True)
        allotted[order[:remainder]] += 1
    return torch.repeat_interleave(torch.arange(num_classes), allotted)


def round_targets(settings: GeneratorParams, batch_size: int, class_counts: list[int]) -> torch.Tensor:
    """The targets a round asks the generator for (`generator.target_sampling`)."""
    if settings.target_sampling == "balanced":
        return balanced_targets(batch_size, len(class_counts))
    prior = None if settings.target_prior == "auto" else settings.target_prior
    return steered_targets(batch_size, class_counts, prior, settings.target_cap)
