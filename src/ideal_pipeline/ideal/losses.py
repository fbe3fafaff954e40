"""Generator losses of IDEAL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy_term(logits: torch.Tensor, form: str) -> torch.Tensor:
    """Negative entropy to *minimise*, in one of the two forms IDEAL is described with.

    - ``per_sample``: the reference code's `(p * log p).mean()`, the mean over samples *and*
      classes: pushes each sample's prediction to be less confident.
    - ``per_sample_sum``: the same summed over classes, i.e. C times the reference code's term.
    - ``batch_balance``: sum_k p_mean log p_mean of the batch-mean prediction (the paper's
      text): pushes the batch towards an even use of all classes.
    """
    probs = F.softmax(logits, dim=1)
    if form == "per_sample":
        return (probs * F.log_softmax(logits, dim=1)).mean()
    if form == "per_sample_sum":
        return (probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    mean_probs = probs.mean(dim=0)  # batch_balance
    return (mean_probs * torch.log(mean_probs.clamp_min(1e-12))).sum()


def same_class_similarity(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between two images of the batch asked for the same class, each taken
    as its difference from the batch's mean image (0 when no class is asked for twice).

    A diversity term to *minimise*: the generator is paid for nothing by images that repeat one
    another, and a collapsed class is the usual way a class stays rare."""
    flat = images.flatten(1).float()
    unit = F.normalize(flat - flat.mean(0, keepdim=True), dim=1)
    same = (targets[:, None] == targets[None, :]).fill_diagonal_(False)
    if not same.any():
        return unit.new_zeros(())
    return (unit @ unit.T)[same].mean()


def disagreement(logits: torch.Tensor, rival_logits: torch.Tensor) -> torch.Tensor:
    """Mean total variation distance between two students' predicted distributions, in [0, 1]: a term to
    *maximise*. DisGUIDE's signal (the spread of its clones' predictions; with two clones their standard
    deviation per class is half this distance's per-class terms)."""
    return 0.5 * (F.softmax(logits.float(), dim=1) - F.softmax(rival_logits.float(), dim=1)).abs().sum(dim=1).mean()


def generator_loss(
    logits: torch.Tensor, targets: torch.Tensor, entropy_weight: float, entropy_form: str
) -> torch.Tensor:
    """CE(student(x), targets) + entropy_weight * entropy_term."""
    return F.cross_entropy(logits, targets) + entropy_weight * entropy_term(logits, entropy_form)
