"""Paying only for informative images: candidates are free, labels are not.

With `generator.candidates: k`, the round's kept generator makes k batches of B images (its own
noise first, then fresh noise) and the round buys labels for B of them: those the student is
least sure of, its predicted classes taking turns so that no class the student believes in is left
out (the filtering of QEDG and CaBaGE). Only the chosen images are sent; the ledger counts them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ideal_pipeline.compute import Compute
from ideal_pipeline.models.images import to_float

# Candidate noise comes from a stream of its own, numpy's SeedSequence of (this tag, the round's seed).
# Not torch's CPU generator at an offset seed: it keeps a seed's low 32 bits only, so `seed + 2**32`
# replayed the kept batch's own noise and every round bought each of its images twice.
CANDIDATE_STREAM = 0x1DEA1
SCORING_BATCH = 1000


def candidate_noise(kept_noise: torch.Tensor, candidates: int, seed: int) -> torch.Tensor:
    """The kept batch's noise, then (candidates - 1) batches of fresh noise: (candidates * B, nz)."""
    rng = np.random.default_rng([CANDIDATE_STREAM, seed])
    shape = ((candidates - 1) * len(kept_noise), kept_noise.shape[1])
    extra = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    return torch.cat([kept_noise, extra.to(kept_noise.dtype)])


def least_sure_by_class(probabilities: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (ascending) of `count` rows of (N, classes) probabilities: each predicted class in turn
    gives its least confident row not yet taken; a class with no rows left drops out of the turns."""
    if count > len(probabilities):
        raise ValueError(f"cannot choose {count} images from {len(probabilities)} candidates")
    confidence, predicted = probabilities.max(1)
    order = torch.argsort(confidence, stable=True)  # least sure first
    classes = F.one_hot(predicted[order], probabilities.shape[1])
    rank_in_class = (classes.cumsum(0) * classes).sum(1) - 1
    # Turn by turn (rank in its class), and within a turn the least sure first.
    turn_order = torch.argsort(rank_in_class * len(order) + torch.arange(len(order)))
    return order[turn_order[:count]].sort().values


@torch.no_grad()
def choose_images(student: nn.Module, images: torch.Tensor, count: int, compute: Compute) -> torch.Tensor:
    """Which `count` of the uint8 candidate images (N, C, H, W) to buy labels for, by the student's view."""
    student = student.to(compute.device).eval()
    probabilities = []
    for chunk in images.split(SCORING_BATCH):
        with compute.autocast():
            probabilities.append(student(to_float(chunk.to(compute.device))).float().softmax(1).cpu())
    return least_sure_by_class(torch.cat(probabilities), count)
