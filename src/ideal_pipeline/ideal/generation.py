"""IDEAL stage 1, data generation: zero queries, the current student is the proxy."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ideal_pipeline.ideal.augment import random_crop_flip
from ideal_pipeline.ideal.losses import generator_loss
from ideal_pipeline.models.generator import Generator


@dataclass
class GeneratorSettings:
    nz: int = 256
    ngf: int = 64
    g_steps: int = 10
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    entropy_weight: float = 5.0
    entropy_form: str = "per_sample"
    augment: bool = True
    crop_padding: int | str = "auto"
    channels_last: bool = True
    reinitialize: bool = True


@dataclass
class GeneratorResult:
    """The generator snapshot that produced the lowest-loss batch, and its inputs."""

    state_dict: dict[str, torch.Tensor]
    noise: torch.Tensor  # (B, nz) float32
    targets: torch.Tensor  # (B,) int64
    losses: list[float]
    best_step: int


def crop_padding(setting: int | str, image_size: int) -> int:
    """Padding of the generator's random crop: an int, or "auto" = 1/8 of the image side
    (4 for 28x28 and 32x32 as in the reference code, 1 for 8x8, where 4 would be half the image)."""
    if setting == "auto":
        return max(1, round(image_size / 8))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"ideal.generator.crop_padding must be 'auto' or an integer >= 0, got {setting!r}")
    return setting


def _to_format(module_or_tensor, channels_last: bool):
    return module_or_tensor.to(memory_format=torch.channels_last) if channels_last else module_or_tensor


def train_generator(
    student: nn.Module,
    targets: torch.Tensor,
    settings: GeneratorSettings,
    image_size: int,
    channels: int,
    seed: int,
    device: torch.device,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> GeneratorResult:
    """Train a generator so the frozen student labels its images as `targets`.

    The generator starts freshly initialised (IDEAL) or from `initial_state` (an earlier round's
    kept weights); its Adam state and noise are new either way.
    Returns the weights at the step whose batch had the lowest loss (the batch IDEAL keeps).
    """
    padding = crop_padding(settings.crop_padding, image_size)
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
            # The weights *before* this step's update produced the batch being scored.
            best_loss, best_step = value, step
            best_state = copy.deepcopy(generator.state_dict())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    state = {k: v.detach().cpu().contiguous() for k, v in best_state.items()}
    return GeneratorResult(state, noise, targets.clone(), losses, best_step)


@torch.no_grad()
def generate_images(
    generator_state: dict[str, torch.Tensor],
    noise: torch.Tensor,
    settings: GeneratorSettings,
    image_size: int,
    channels: int,
    device: torch.device,
) -> torch.Tensor:
    """Re-run a kept generator on its noise: (B, C, H, W) float in [0, 1].

    BatchNorm stays in training mode, as when the batch was scored, so the same batch comes out.
    """
    generator = Generator(settings.nz, settings.ngf, image_size, channels)
    generator.load_state_dict(generator_state)
    generator = _to_format(generator, settings.channels_last).to(device).train()
    return generator(noise.to(device)).float().cpu().contiguous()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8, the storage format: the stored image is exactly the one sent."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 storage format back to [0, 1] float32."""
    return images.float().div_(255.0)
