"""Supervised training of the victim teacher on real data (the model owner's side)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ideal_pipeline.ideal.augment import apply_crop_flip, draw_crop_flip
from ideal_pipeline.ideal.generation import crop_padding, to_float
from ideal_pipeline.runtime import LossMeter, autocast, check_precision

OPTIMIZERS = ("adamw", "sgd")
# SGD's momentum, the usual for CIFAR ResNets; the one-cycle schedule cycles it between 0.85 and 0.95.
SGD_MOMENTUM = 0.9


def _optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay
        )
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


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
    optimizer: str = "adamw",
    label_smoothing: float = 0.0,
    augment: bool = False,
    channels_last: bool = False,
) -> list[float]:
    """A one-cycle schedule (peak `lr`) on uint8 images (N, C, H, W); returns each epoch's mean loss.

    The defaults are the Fashion-MNIST victim the notes measured: AdamW, no augmentation (no flips).
    `augment` adds a random crop (zero padding 1/8 of the side: 4 at 32x32) and a horizontal flip
    per sample, drawn from a generator of their own so that the batch order does not change with it;
    `channels_last` trains in that memory format (faster convolutions on CPUs) and hands the model
    back in the default one. The data moves to `device` once as uint8; `precision` is the forward
    pass's autocast.
    """
    precision = check_precision(precision, device)
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optim = _optimizer(optimizer, model, lr, weight_decay)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=epochs * steps_per_epoch)
    augment_rng = torch.Generator().manual_seed(seed + 1) if augment else None
    padding = crop_padding("auto", images.shape[-1])
    images, labels = images.to(device), labels.to(device)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=rng).to(device)
        meter = LossMeter(device)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc=f"teacher epoch {epoch + 1}/{epochs}", leave=False, mininterval=2.0):
            index = order[start : start + batch_size]
            batch = images[index]
            if augment:  # on the uint8 batch: a quarter of the bytes of the float one
                batch = apply_crop_flip(batch, draw_crop_flip(len(index), padding, augment_rng).to(device))
            inputs = to_float(batch)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                loss = F.cross_entropy(model(inputs), labels[index], label_smoothing=label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            schedule.step()
            meter.add(loss, len(index))
        losses.append(meter.mean())
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return losses
