"""Images as tensors: the uint8 storage format, and the crop + flip augmentation of generator and victim.

Stored images are uint8 (N, C, H, W): the exact bytes sent to the teacher. The loops see float32
in [0, 1]. The crop + flip is differentiable (the generator learns images whose class survives
it) and its random draws come from a CPU generator of the caller's, so they are the same on any
device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8, the storage format: the stored image is exactly the one sent."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 storage format back to [0, 1] float32."""
    return images.float().div_(255.0)


def crop_padding(setting: int | str, image_size: int) -> int:
    """Padding of the random crop: an int, or "auto" = 1/8 of the image side (4 for 28x28 and
    32x32 as in the reference code, 1 for 8x8, where 4 would be half the image)."""
    return max(1, round(image_size / 8)) if setting == "auto" else int(setting)


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
    """Draw one batch's crop offsets and flips from a CPU generator (offsets before flips, as the reference pipeline draws them)."""
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
