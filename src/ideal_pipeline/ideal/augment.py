"""Differentiable batch augmentation used while training the generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of (N, C, H, W) images.

    Gradients flow back to `images`, so the generator learns images whose class survives
    the crops and flips (the reference code's RandomCrop(padding=4) + RandomHorizontalFlip).
    """
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
