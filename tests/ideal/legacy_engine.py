"""The training loops exactly as they were at commit a5517da, before the device-resident engine.

Kept as an oracle: the engine's CPU fp32 results must stay bitwise equal to these on any machine
(the recorded values in test_pinned_engine.py pin these loops themselves). Do not "improve" this
file: its only job is to be the old code.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ideal_pipeline.ideal.losses import generator_loss
from ideal_pipeline.models.generator import Generator


def to_float(images):
    return images.float().div_(255.0)


def random_crop_flip(images, padding=4, generator=None):
    n, _, h, w = images.shape
    device = images.device
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def _to_format(module_or_tensor, channels_last):
    return module_or_tensor.to(memory_format=torch.channels_last) if channels_last else module_or_tensor


def train_generator(student, targets, settings, image_size, channels, seed, device, padding, initial_state=None):
    """`padding` is crop_padding(settings.crop_padding, image_size), resolved by the caller."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    generator = Generator(settings.nz, settings.ngf, image_size, channels)
    if initial_state is not None:
        generator.load_state_dict(initial_state)
    generator = _to_format(generator, settings.channels_last)
    generator.to(device).train()
    student = _to_format(student, settings.channels_last).to(device).eval()
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=tuple(settings.betas))
    noise = torch.randn(len(targets), settings.nz, generator=rng)
    z, y = noise.to(device), targets.to(device)
    best_loss, best_step, best_state, losses = float("inf"), -1, None, []
    for step in range(settings.g_steps):
        images = generator(z)
        views = random_crop_flip(images, padding, generator=rng) if settings.augment else images
        loss = generator_loss(student(views), y, settings.entropy_weight, settings.entropy_form)
        value = loss.item()
        losses.append(value)
        if value < best_loss:
            best_loss, best_step = value, step
            best_state = copy.deepcopy(generator.state_dict())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    state = {k: v.detach().cpu().contiguous() for k, v in best_state.items()}
    return state, noise, losses, best_step


def distill(student, images, labels, settings, seed, device):
    rng = torch.Generator().manual_seed(seed)
    student.to(device).train()
    optimizer = torch.optim.SGD(
        student.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    epoch_losses = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(images), generator=rng)
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            index = order[start : start + settings.batch_size]
            x = to_float(images[index]).to(device)
            y = labels[index].to(device)
            loss = F.cross_entropy(student(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            seen += len(index)
        epoch_losses.append(total / max(seen, 1))
    return epoch_losses


def train_classifier(model, images, labels, epochs, batch_size, lr, weight_decay, seed, device):
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=rng)
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(to_float(images[index]).to(device)), labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / len(images))
    return losses


@torch.no_grad()
def predict(model: nn.Module, images, device, batch_size=1000):
    model.to(device).eval()
    out = [
        model(to_float(images[i : i + batch_size]).to(device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)
