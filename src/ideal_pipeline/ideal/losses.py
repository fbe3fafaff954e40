"""Generator losses of IDEAL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ENTROPY_FORMS = ("per_sample", "batch_balance")


def entropy_term(logits: torch.Tensor, form: str) -> torch.Tensor:
    """Negative entropy to *minimise*, in one of the two forms IDEAL is described with.

    - ``per_sample``: mean over samples of sum_k p log p (the reference code): pushes each
      sample's prediction to be less confident.
    - ``batch_balance``: sum_k p_mean log p_mean of the batch-mean prediction (the paper's
      text): pushes the batch towards an even use of all classes.
    """
    probs = F.softmax(logits, dim=1)
    if form == "per_sample":
        return (probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    if form == "batch_balance":
        mean_probs = probs.mean(dim=0)
        return (mean_probs * torch.log(mean_probs.clamp_min(1e-12))).sum()
    raise ValueError(f"unknown entropy form {form!r}; choose one of {ENTROPY_FORMS}")


def generator_loss(
    logits: torch.Tensor, targets: torch.Tensor, entropy_weight: float, entropy_form: str
) -> torch.Tensor:
    """CE(student(x), targets) + entropy_weight * entropy_term."""
    return F.cross_entropy(logits, targets) + entropy_weight * entropy_term(logits, entropy_form)
