"""Paying only for informative images: candidates are free, labels are not.

With `generator.candidates: k`, the round's kept generator makes k batches of B images (its own
noise first, then fresh noise) and the round buys labels for B of them: those the student is
least sure of, its predicted classes taking turns so that no class the student believes in is left
out (the filtering of QEDG and CaBaGE); or, with `generator.candidate_quota: targets`, each class
first as many as the round's targets ask of it (steered towards the classes the teacher gave least),
the rest in turns. With `generator.candidate_quota: rare_likeliest`, a class the targets ask more of than
its balanced share gets the candidates the student finds *likeliest* to be it instead: the least sure
images of a class the teacher rarely gives are the least likely to be labelled with it, so buying those
starved it (MNIST with a LeNet victim: digit 9 got 2 labels of 10,000). `rescue` keeps the turns and
does that only for a class given under half its share of the labels so far. With a rival student
(`student.rival`), "sure" is the two students' mean prediction. Only the chosen images are sent; the
ledger counts them.
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


def candidate_quota(mode: str, targets: torch.Tensor, class_counts: list[int]) -> tuple[torch.Tensor | None, ...]:
    """The images per class a round buys first (`quota`), and the classes whose quota takes the candidates
    likeliest to be them rather than the least sure (`likeliest`), by `generator.candidate_quota`
    (None: no quota, no such class)."""
    if mode == "turns":
        return None, None
    counts = torch.tensor(class_counts)
    asked = torch.bincount(targets, minlength=len(counts))
    if mode == "targets":
        return asked, None
    if mode == "rare_likeliest":
        return asked, asked * len(counts) > len(targets)  # asked more than the balanced share
    if mode == "rescue":
        starving = counts * 2 * len(counts) < counts.sum()  # under half the balanced share of the labels
        return asked.masked_fill(~starving, 0), starving
    raise ValueError(f"unknown candidate_quota {mode!r}: turns, targets, rare_likeliest or rescue")


def least_sure_by_class(
    probabilities: torch.Tensor, count: int, quota: torch.Tensor | None = None, likeliest: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices (ascending) of `count` rows of (N, classes) probabilities: each predicted class in turn
    gives its least confident row not yet taken; a class with no rows left drops out of the turns.

    With `quota` (rows per class, summing to at most `count`), each predicted class first gives up to
    its quota of least confident rows, and the rows a class could not give are chosen in turns as above.
    A class marked in `likeliest` (booleans per class) instead takes its quota first, of the rows with
    its highest probability, whatever class they are predicted to be (the largest quota first).
    """
    if count > len(probabilities):
        raise ValueError(f"cannot choose {count} images from {len(probabilities)} candidates")
    confidence, predicted = probabilities.max(1)
    order = torch.argsort(confidence, stable=True)  # least sure first
    if quota is None:
        return _in_turns(order, predicted, probabilities.shape[1])[:count].sort().values
    if int(quota.sum()) > count:
        raise ValueError(f"a quota of {int(quota.sum())} images does not fit the {count} to choose")
    taken = torch.zeros(len(probabilities), dtype=torch.bool)
    if likeliest is not None:
        for k in torch.argsort(quota.masked_fill(~likeliest, -1), descending=True, stable=True)[: int(likeliest.sum())]:
            likely = torch.argsort(probabilities[:, k].masked_fill(taken, -1.0), descending=True, stable=True)
            taken[likely[: int(quota[k])]] = True
        quota = quota.masked_fill(likeliest, 0)
    order = order[~taken[order]]
    within = _rank_in_class(order, predicted, probabilities.shape[1]) < quota[predicted[order]]
    rest = _in_turns(order[~within], predicted, probabilities.shape[1])
    left = count - int(taken.sum()) - int(within.sum())
    return torch.cat([torch.nonzero(taken).flatten(), order[within], rest[:left]]).sort().values


def _rank_in_class(order: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """Each row of `order`'s rank among the rows of its predicted class, in `order`."""
    one_hot = F.one_hot(predicted[order], classes)
    return (one_hot.cumsum(0) * one_hot).sum(1) - 1


def _in_turns(order: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """`order` rearranged turn by turn (rank in its class), and within a turn in `order`."""
    rank = _rank_in_class(order, predicted, classes)
    return order[torch.argsort(rank * len(order) + torch.arange(len(order)))]


@torch.no_grad()
def choose_images(
    student: nn.Module,
    images: torch.Tensor,
    count: int,
    compute: Compute,
    quota: torch.Tensor | None = None,
    likeliest: torch.Tensor | None = None,
    rival: nn.Module | None = None,
) -> torch.Tensor:
    """Which `count` of the uint8 candidate images (N, C, H, W) to buy labels for, by the student's view
    (`quota`: images per class; `likeliest`: classes whose quota takes their likeliest images; see
    `least_sure_by_class`). With a `rival` student, by the two students' mean prediction: an image they
    disagree on is one neither is sure of (query by committee)."""
    committee = [m.to(compute.device).eval() for m in (student, rival) if m is not None]
    probabilities = []
    for chunk in images.split(SCORING_BATCH):
        batch = to_float(chunk.to(compute.device))
        with compute.autocast():
            predictions = [model(batch).float().softmax(1) for model in committee]
        probabilities.append(torch.stack(predictions).mean(0).cpu())
    return least_sure_by_class(torch.cat(probabilities), count, quota, likeliest)
