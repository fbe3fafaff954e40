"""IDEAL stage 2, distillation on teacher-labelled synthetic samples (no queries here).

No flips or crops with a label: a transformed image is a new image whose label was never paid for.
`consistency_weight` uses such copies without labels, as the student's own prediction to agree with.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ideal_pipeline.compute import Compute
from ideal_pipeline.models.training import LoopOptions, passes, train
from ideal_pipeline.parameter_schema import DistillParams

# The consistency views' crops and flips: a stream of their own, numpy's SeedSequence of (this tag, the
# call's seed), apart from the batch order's generator (torch's keeps a seed's low 32 bits only).
VIEW_STREAM = 0xC0251


def round_learning_rate(settings: DistillParams, round_index: int, rounds: int) -> float:
    """Round `round_index`'s (1..rounds) learning rate: `lr` in round 1, `lr * final_lr_fraction` in the last,
    on a half cosine (1 = constant)."""
    progress = (round_index - 1) / (rounds - 1) if rounds > 1 else 1.0
    fraction = settings.final_lr_fraction
    return settings.lr * (fraction + (1 - fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def distill(
    student: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: DistillParams,
    seed: int,
    compute: Compute,
    momentum: dict[str, torch.Tensor] | None = None,
    lr: float | None = None,
    progress: Callable[[int], None] | None = None,
    average: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """Train `student` in place on (uint8 images (N, C, H, W), int64 labels (N,)) with SGD.

    `settings.epochs` passes over the pool, or more (the last one partial) until `settings.min_steps`
    SGD steps are made: the early rounds' pools are a few hundred images, one pass is one or two
    steps, and the student (the generator's only guide) would stay near chance. `momentum`
    ({parameter name: SGD momentum buffer}, CPU tensors) continues an earlier optimiser, as the
    reference code's one optimiser for the whole run does, and is updated in place with the
    buffers it ends with. `lr` overrides `settings.lr` (a round's scheduled rate); `progress` is
    called with each batch's size. With `settings.weight_average`, `average` ({state key: tensor},
    empty at first) holds an exponential moving average of the student's weights and BatchNorm
    statistics, continued from call to call and updated in place after every step; the student
    itself is left as SGD made it. Returns the mean loss of each pass.
    """
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=settings.lr if lr is None else lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    if momentum:
        for name, parameter in student.named_parameters():
            if name in momentum:
                optimizer.state[parameter]["momentum_buffer"] = momentum[name].to(compute.device).clone()
    options = LoopOptions(
        batch_size=settings.batch_size,
        steps=passes(len(images), settings.batch_size, settings.epochs, settings.min_steps),
        logit_adjustment=_logit_adjustment(labels, student, settings.logit_adjustment, compute.device),
        consistency_weight=settings.consistency_weight,
        consistency_seed=int(np.random.SeedSequence([VIEW_STREAM, seed]).generate_state(1)[0]),
    )
    rng = torch.Generator().manual_seed(seed)
    averaged = _moving_average(student, average, settings.weight_average, compute.device)
    step = progress
    if averaged is not None:

        def step(batch: int) -> None:
            averaged.update_parameters(student)
            if progress is not None:
                progress(batch)

    losses = train(student, images, labels, optimizer, options, rng, compute, progress=step)
    if averaged is not None:
        average.clear()
        average.update({k: v.detach().cpu().contiguous() for k, v in averaged.module.state_dict().items()})
    if momentum is not None:
        momentum.clear()
        momentum.update(momentum_buffers(student, optimizer))
    return losses or [0.0]


def _moving_average(
    student: nn.Module, average: dict[str, torch.Tensor] | None, decay: float | None, device: torch.device
) -> AveragedModel | None:
    """torch's EMA of the student (BatchNorm statistics averaged too), resumed from `average` when it
    holds an earlier call's; None when no average is kept."""
    if decay is None or average is None:
        return None
    averaged = AveragedModel(student, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if average:
        averaged.module.load_state_dict(average)
        averaged.n_averaged.fill_(1)  # the first update of a fresh average copies the weights; this one goes on
    return averaged


def _logit_adjustment(
    labels: torch.Tensor, student: nn.Module, tau: float, device: torch.device
) -> torch.Tensor | float:
    """tau * log(class frequency) of the labels (Menon et al., 2021), so classes the teacher rarely
    gave are not drowned out; predictions use the plain logits. 0 when tau is 0."""
    if not tau:
        return 0.0
    num_classes = [m for m in student.modules() if isinstance(m, nn.Linear)][-1].out_features
    counts = torch.bincount(labels, minlength=num_classes).float()
    return (tau * torch.log((counts + 1) / (counts.sum() + num_classes))).to(device)


def momentum_buffers(student: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """{parameter name: SGD momentum buffer} on the CPU: what `distill(momentum=...)` continues from."""
    return {
        name: optimizer.state[parameter]["momentum_buffer"].detach().cpu().contiguous()
        for name, parameter in student.named_parameters()
        if optimizer.state.get(parameter, {}).get("momentum_buffer") is not None
    }
