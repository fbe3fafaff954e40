"""The one supervised training loop: the victim's training (owner's side), IDEAL's distillation and
re-distillation (attacker's side) are all this loop with other optimisers and options.

Images stay uint8 (N, C, H, W) and move to the device once; each batch is converted there. The
batch order comes from a CPU generator seeded by the caller, so a run's order is the same on any
device. Losses are summed on the device and read once per pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ideal_pipeline.compute import Compute, LossMeter
from ideal_pipeline.models.images import apply_crop_flip, crop_padding, draw_crop_flip, to_float


@dataclass(frozen=True)
class LoopOptions:
    """How the loop treats each batch; the defaults are a plain pass of cross-entropy on the stored images."""

    batch_size: int
    steps: int  # SGD steps in all: whole passes over the data, the last one possibly cut short
    label_smoothing: float = 0.0
    # A random crop (zero padding side/8) and horizontal flip of each image, drawn from this seed's
    # generator: the owner's own data only. The attacker's images are never transformed: a
    # transformed image is a new image whose label was never paid for.
    augment_seed: int | None = None
    channels_last: bool = False
    # tau * log(class frequency) added to the logits while training (logit adjustment), or 0.
    logit_adjustment: torch.Tensor | float = 0.0
    # Weight of a consistency term (0: none): the model's prediction on a random crop + flip of each
    # image (drawn from this seed's generator) is pulled towards its own prediction on the image.
    # No label is used for the copy, so the attacker may use it: nothing is guessed, nothing is paid.
    consistency_weight: float = 0.0
    consistency_seed: int = 0


def passes(count: int, batch_size: int, epochs: int, min_steps: int = 0) -> int:
    """SGD steps of `epochs` passes over `count` images, and at least `min_steps`."""
    return max(epochs * math.ceil(count / batch_size), min_steps)


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    options: LoopOptions,
    rng: torch.Generator,
    compute: Compute,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Train `model` in place on (uint8 images, int64 labels); returns each pass's mean loss."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    device = compute.device
    model.to(device).train()
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    augment_rng = None if options.augment_seed is None else torch.Generator().manual_seed(options.augment_seed)
    view_rng = torch.Generator().manual_seed(options.consistency_seed) if options.consistency_weight else None
    padding = crop_padding("auto", images.shape[-1])
    images, labels = images.to(device), labels.to(device)
    pass_losses, steps_left = [], options.steps
    while steps_left > 0 and len(images):
        order = torch.randperm(len(images), generator=rng).to(device)
        meter = LossMeter(device)
        starts = range(0, len(order), options.batch_size)[:steps_left]
        steps_left -= len(starts)
        for start in starts:
            index = order[start : start + options.batch_size]
            batch = images[index]
            if augment_rng is not None:  # on the uint8 batch: a quarter of the bytes of the float one
                batch = apply_crop_flip(batch, draw_crop_flip(len(index), padding, augment_rng).to(device))
            inputs = to_float(batch)
            if view_rng is not None:  # one forward pass over the images and their views
                views = apply_crop_flip(batch, draw_crop_flip(len(index), padding, view_rng).to(device))
                inputs = torch.cat([inputs, to_float(views)])
            if options.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with compute.autocast():
                logits = model(inputs)
                if view_rng is not None:
                    logits, view_logits = logits.split(len(index))
                if isinstance(options.logit_adjustment, torch.Tensor):
                    logits = logits + options.logit_adjustment
                loss = F.cross_entropy(logits, labels[index], label_smoothing=options.label_smoothing)
                if view_rng is not None:
                    loss = loss + options.consistency_weight * consistency(logits, view_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            meter.add(loss, len(index))
            if progress is not None:
                progress(len(index))
        pass_losses.append(meter.mean())
    if options.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return pass_losses


def consistency(logits: torch.Tensor, view_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(image) || p(view)), mean over the batch, with p(image) held fixed (the target, not learned from)."""
    target = F.softmax(logits.detach().float(), 1)
    return F.kl_div(F.log_softmax(view_logits.float(), 1), target, reduction="batchmean")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Top-1 predictions (N,) int64 on the CPU for uint8 images (N, C, H, W); one transfer each way."""
    model.to(device).eval()
    images = images.to(device)
    out = [model(to_float(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe,
    compute: Compute,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """The owner's recipe (`params:victim`): AdamW or Nesterov SGD on a one-cycle schedule peaking at `lr`.

    `recipe` holds epochs, batch_size, lr, weight_decay, seed, optimizer, label_smoothing, augment
    and channels_last. Returns each epoch's mean loss.
    """
    torch.manual_seed(recipe.seed)
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:  # the usual for CIFAR ResNets; the one-cycle schedule cycles the momentum between 0.85 and 0.95
        optimizer = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
        )
    steps = passes(len(images), recipe.batch_size, recipe.epochs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
    options = LoopOptions(
        batch_size=recipe.batch_size,
        steps=steps,
        label_smoothing=recipe.label_smoothing,
        augment_seed=recipe.seed + 1 if recipe.augment else None,
        channels_last=recipe.channels_last,
    )
    rng = torch.Generator().manual_seed(recipe.seed)
    return train(model, images, labels, optimizer, options, rng, compute, schedule, progress)
