"""Differentiable batch augmentation used while training the generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CropFlip:
    """Per-sample parameters of `random_crop_flip`: crop offsets (None without padding) and flips, (..., N)."""

    padding: int
    dy: torch.Tensor | None
    dx: torch.Tensor | None
    flip: torch.Tensor  # bool

    def to(self, device: torch.device) -> CropFlip:
        return CropFlip(self.padding, *(_maybe(t, lambda t: t.to(device)) for t in (self.dy, self.dx, self.flip)))

    def __getitem__(self, step: int) -> CropFlip:
        """One step's parameters out of `draw_crop_flips`' stacked ones."""
        return CropFlip(self.padding, *(_maybe(t, lambda t: t[step]) for t in (self.dy, self.dx, self.flip)))


def _maybe(tensor: torch.Tensor | None, fn) -> torch.Tensor | None:
    return None if tensor is None else fn(tensor)


def draw_crop_flip(n: int, padding: int = 4, generator: torch.Generator | None = None) -> CropFlip:
    """Draw one batch's crop offsets and flips from a CPU generator (the draws of earlier versions, in order)."""
    dy = dx = None
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return CropFlip(padding, dy, dx, flip)


def draw_crop_flips(steps: int, n: int, padding: int, generator: torch.Generator | None) -> CropFlip:
    """`steps` batches' parameters drawn up front, stacked (steps, N): one transfer to the device
    instead of one per step, with the random stream unchanged (no other draws happen in between)."""
    draws = [draw_crop_flip(n, padding, generator) for _ in range(steps)]
    if not draws:
        return CropFlip(padding, None, None, torch.empty(0, n, dtype=torch.bool))
    dy = dx = None
    if padding > 0:
        dy, dx = torch.stack([d.dy for d in draws]), torch.stack([d.dx for d in draws])
    return CropFlip(padding, dy, dx, torch.stack([d.flip for d in draws]))


def apply_crop_flip(images: torch.Tensor, params: CropFlip) -> torch.Tensor:
    """Crop (zero padding) and flip (N, C, H, W) images by `params` (on the images' device)."""
    n, channels, h, w = images.shape
    device = images.device
    if params.padding > 0:
        p = params.padding
        padded = F.pad(images, (p, p, p, p))
        rows = (params.dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
        cols = (params.dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(channels, device=device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    return torch.where(params.flip[:, None, None, None], images.flip(-1), images)


def random_crop_flip(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of (N, C, H, W) images.

    Gradients flow back to `images`, so the generator learns images whose class survives
    the crops and flips (the reference code's RandomCrop(padding=4) + RandomHorizontalFlip).
    """
    return apply_crop_flip(images, draw_crop_flip(len(images), padding, generator).to(images.device))
