"""IDEAL stage 2, distillation on teacher-labelled synthetic samples (no queries here)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ideal_pipeline.ideal.generation import to_float
from ideal_pipeline.runtime import LossMeter, autocast, check_precision


@dataclass
class DistillSettings:
    batch_size: int = 250
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 1
    # At least this many SGD steps per call: the early rounds' pools are a few hundred images, so one
    # pass is one or two steps and the student (the generator's only guide) stays near chance.
    min_steps: int = 0
    # Carry SGD's momentum from round to round, as the reference code's one optimiser for the whole
    # run does (issue #13); false restarts it every round.
    keep_optimizer: bool = False
    # Logit adjustment (Menon et al., 2021): train on logits + tau * log(class frequency in the pool),
    # predict with the plain logits, so classes the teacher rarely gave are not drowned out. 0 = off.
    logit_adjustment: float = 0.0
    # The last round's learning rate as a fraction of `lr`, reached on a half cosine over the rounds
    # (1 = constant). Meant to average out the final student's round-to-round noise; at 10,000 queries
    # 0.1 lost 5 points on validation (the late rounds' new samples need full steps), so 1 stays.
    final_lr_fraction: float = 1.0


def round_learning_rate(settings: DistillSettings, round_index: int, rounds: int) -> float:
    """Round `round_index`'s (1..rounds) learning rate: `lr` in round 1, `lr * final_lr_fraction` in the last."""
    progress = (round_index - 1) / (rounds - 1) if rounds > 1 else 1.0
    fraction = settings.final_lr_fraction
    return settings.lr * (fraction + (1 - fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def distill(
    student: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: DistillSettings,
    seed: int,
    device: torch.device,
    progress=None,
    *,
    precision: torch.dtype | str = torch.float32,
    momentum: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """Train `student` in place on (uint8 images (N, C, H, W), int64 labels (N,)).

    No flips or crops: a transformed image is a new image whose label was never paid for.
    The pool moves to `device` once as uint8 and each batch is converted there; `precision`
    is the forward pass's autocast (torch.float32 or torch.bfloat16, or a setting string).
    `momentum` ({parameter name: SGD momentum buffer}, CPU tensors) continues an earlier optimiser
    instead of starting a fresh one, and is updated in place with the buffers it ends with.
    Trains `settings.epochs` passes over the pool, or more (the last one partial) until
    `settings.min_steps` SGD steps are made. Returns the mean loss of each pass (read from the
    device once per pass).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    precision = check_precision(precision, device)
    rng = torch.Generator().manual_seed(seed)
    student.to(device).train()
    optimizer = sgd(student, settings)
    if momentum:
        for name, parameter in student.named_parameters():
            if name in momentum:
                optimizer.state[parameter]["momentum_buffer"] = momentum[name].to(device).clone()
    images, labels = images.to(device), labels.to(device)
    adjustment = _logit_adjustment(labels, student, settings.logit_adjustment)
    epoch_losses = []
    steps_left = max(settings.epochs * math.ceil(len(images) / settings.batch_size), settings.min_steps)
    while steps_left > 0 and len(images):
        order = torch.randperm(len(images), generator=rng).to(device)
        meter = LossMeter(device)
        starts = range(0, len(order), settings.batch_size)[:steps_left]
        steps_left -= len(starts)
        for start in starts:
            index = order[start : start + settings.batch_size]
            with autocast(device, precision):
                loss = F.cross_entropy(student(to_float(images[index])) + adjustment, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.add(loss, len(index))
            if progress is not None:
                progress(len(index))
        epoch_losses.append(meter.mean())
    if momentum is not None:
        momentum.clear()
        momentum.update(momentum_buffers(student, optimizer))
    return epoch_losses or [0.0]


def _logit_adjustment(labels: torch.Tensor, student: nn.Module, tau: float) -> torch.Tensor | float:
    """tau * log(class frequency) of the labels, added to the logits while training (0 when tau is 0)."""
    if not tau:
        return 0.0
    num_classes = [m for m in student.modules() if isinstance(m, nn.Linear)][-1].out_features
    counts = torch.bincount(labels, minlength=num_classes).float()
    return tau * torch.log((counts + 1) / (counts.sum() + num_classes))


def sgd(student: nn.Module, settings: DistillSettings) -> torch.optim.SGD:
    return torch.optim.SGD(
        student.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def momentum_buffers(student: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """{parameter name: SGD momentum buffer} on the CPU: what `distill(momentum=...)` continues from."""
    return {
        name: optimizer.state[parameter]["momentum_buffer"].detach().cpu().contiguous()
        for name, parameter in student.named_parameters()
        if optimizer.state.get(parameter, {}).get("momentum_buffer") is not None
    }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Top-1 predictions (N,) int64 on the CPU for uint8 images (N, C, H, W); one transfer each way."""
    model.to(device).eval()
    images = images.to(device)
    out = [model(to_float(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)
