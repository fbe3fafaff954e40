"""IDEAL stage 2, distillation on teacher-labelled synthetic samples (no queries here)."""

from __future__ import annotations

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
) -> list[float]:
    """Train `student` in place on (uint8 images (N, C, H, W), int64 labels (N,)).

    No flips or crops: a transformed image is a new image whose label was never paid for.
    The pool moves to `device` once as uint8 and each batch is converted there; `precision`
    is the forward pass's autocast (torch.float32 or torch.bfloat16, or a setting string).
    Returns the mean loss of each epoch (read from the device once per epoch).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    precision = check_precision(precision, device)
    rng = torch.Generator().manual_seed(seed)
    student.to(device).train()
    optimizer = torch.optim.SGD(
        student.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    images, labels = images.to(device), labels.to(device)
    epoch_losses = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(images), generator=rng).to(device)
        meter = LossMeter(device)
        for start in range(0, len(order), settings.batch_size):
            index = order[start : start + settings.batch_size]
            with autocast(device, precision):
                loss = F.cross_entropy(student(to_float(images[index])), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.add(loss, len(index))
            if progress is not None:
                progress(len(index))
        epoch_losses.append(meter.mean())
    return epoch_losses


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Top-1 predictions (N,) int64 on the CPU for uint8 images (N, C, H, W); one transfer each way."""
    model.to(device).eval()
    images = images.to(device)
    out = [model(to_float(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)
