"""Supervised training of the victim teacher on real data (the model owner's side)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ideal_pipeline.ideal.generation import to_float
from ideal_pipeline.runtime import LossMeter, autocast, check_precision


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    *,
    precision: torch.dtype | str = torch.float32,
) -> list[float]:
    """Adam with a one-cycle schedule on uint8 images (N, C, H, W); returns each epoch's mean loss.

    No flips: the served model is the one the notes measured (trained without flips).
    The data moves to `device` once as uint8; `precision` is the forward pass's autocast.
    """
    precision = check_precision(precision, device)
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    images, labels = images.to(device), labels.to(device)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=rng).to(device)
        meter = LossMeter(device)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc=f"teacher epoch {epoch + 1}/{epochs}", leave=False, mininterval=2.0):
            index = order[start : start + batch_size]
            with autocast(device, precision):
                loss = F.cross_entropy(model(to_float(images[index])), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            meter.add(loss, len(index))
        losses.append(meter.mean())
    return losses
