"""IDEAL stage 1, data generation: zero queries, the current student is the proxy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ideal_pipeline.compute import Compute
from ideal_pipeline.ideal.losses import disagreement, generator_loss, same_class_similarity
from ideal_pipeline.models.generator import Generator
from ideal_pipeline.models.images import apply_crop_flip, crop_padding, draw_crop_flips
from ideal_pipeline.parameter_schema import GeneratorParams


@dataclass
class GeneratorResult:
    """The generator snapshot that produced the lowest-loss batch, and its inputs."""

    state_dict: dict[str, torch.Tensor]
    noise: torch.Tensor  # (B, nz) float32
    targets: torch.Tensor  # (B,) int64
    losses: list[float]
    best_step: int


def _to_format(module_or_tensor, channels_last: bool):
    return module_or_tensor.to(memory_format=torch.channels_last) if channels_last else module_or_tensor


class BestSnapshot:
    """The module's weights and buffers at the lowest loss offered so far.

    On an accelerator `offer` compares and copies on the device (torch.where), so no step waits
    for the host. On the CPU there is nothing to wait for: the loss is read and the weights are
    copied only when it improved (a masked copy of every tensor at every step costs more).
    A loss that is NaN or not below the best so far keeps the earlier snapshot, as a Python
    `value < best` comparison does.
    """

    def __init__(self, module: nn.Module, device: torch.device):
        self.module = module
        self.on_host = device.type == "cpu"
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.best_loss = torch.full((), float("inf"), device=device)

    @torch.no_grad()
    def offer(self, loss: torch.Tensor) -> None:
        loss = loss.detach().float()
        improved = loss < self.best_loss
        if self.on_host:
            if improved:
                self.best_loss = loss.clone()
                for key, value in self.module.state_dict().items():
                    self.state[key].copy_(value)
            return
        self.best_loss = torch.where(improved, loss, self.best_loss)
        for key, value in self.module.state_dict().items():
            torch.where(improved, value, self.state[key], out=self.state[key])


def first_best_step(losses: list[float]) -> int:
    """The step whose batch IDEAL keeps: the first with the lowest loss below +inf (NaN never
    counts), as a `loss < best so far` scan finds it; -1 when there is none."""
    best_loss, best_step = float("inf"), -1
    for step, value in enumerate(losses):
        if value < best_loss:
            best_loss, best_step = value, step
    return best_step


def train_generator(
    student: nn.Module,
    targets: torch.Tensor,
    settings: GeneratorParams,
    image_size: int,
    channels: int,
    seed: int,
    compute: Compute,
    initial_state: dict[str, torch.Tensor] | None = None,
    rival: nn.Module | None = None,
) -> GeneratorResult:
    """Train a generator so the frozen student labels its images as `targets`.

    The generator starts freshly initialised (IDEAL) or from `initial_state` (an earlier round's
    kept weights); its Adam state and noise are new either way.
    Returns the weights at the step whose batch had the lowest loss (the batch IDEAL keeps).
    `generate_images` must re-run the kept generator with the same `compute` (its precision) to
    give back the batch that was scored. Stopping at `settings.stop_at_hit_rate` (the share of
    the batch the student already labels as its targets) ends a round whose later steps would
    buy no coverage. With a `rival` student, the generator is also paid `settings.disagreement_weight`
    times the two students' disagreement on its images (DisGUIDE's signal).
    """
    padding = crop_padding(settings.crop_padding, image_size)
    device = compute.device
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    generator = Generator(settings.nz, settings.ngf, image_size, channels)
    if initial_state is not None:
        generator.load_state_dict(initial_state)
    generator = _to_format(generator, settings.channels_last)
    generator.to(device).train()
    student = _to_format(student, settings.channels_last).to(device).eval()
    if rival is not None:
        rival = _to_format(rival, settings.channels_last).to(device).eval()
    for model in (m for m in (student, rival) if m is not None):
        model.requires_grad_(False)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=tuple(settings.betas))
    noise = torch.randn(len(targets), settings.nz, generator=rng)
    crops = draw_crop_flips(settings.g_steps, len(targets), padding, rng).to(device) if settings.augment else None
    z, y = noise.to(device), targets.to(device)

    losses = torch.empty(settings.g_steps, device=device)
    best = BestSnapshot(generator, device)
    steps = settings.g_steps
    for step in range(settings.g_steps):
        with compute.autocast():
            images = generator(z)
            views = apply_crop_flip(images, crops[step]) if settings.augment else images
            logits = student(views)
            loss = generator_loss(logits, y, settings.entropy_weight, settings.entropy_form)
            if settings.diversity_weight:
                loss = loss + settings.diversity_weight * same_class_similarity(images, y)
            if rival is not None:
                loss = loss - settings.disagreement_weight * disagreement(logits, rival(views))
        losses[step] = loss.detach()
        # The weights *before* this step's update produced the batch being scored.
        best.offer(losses[step])
        # One read from the device per step, only when stopping early is asked for.
        if (
            settings.stop_at_hit_rate is not None
            and (logits.argmax(1) == y).float().mean() >= settings.stop_at_hit_rate
        ):
            steps = step + 1
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss_values = losses[:steps].tolist()
    best_step = first_best_step(loss_values)
    if best_step < 0:
        raise ValueError(f"the generator's loss was never finite in {settings.g_steps} steps: {loss_values}")
    state = {k: v.detach().cpu().contiguous() for k, v in best.state.items()}
    return GeneratorResult(state, noise, targets.clone(), loss_values, best_step)


@torch.no_grad()
def generate_images(
    generator_state: dict[str, torch.Tensor],
    noise: torch.Tensor,
    settings: GeneratorParams,
    image_size: int,
    channels: int,
    compute: Compute,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Re-run a kept generator on its noise: (N, C, H, W) float32 in [0, 1].

    BatchNorm stays in training mode, as when the batch was scored, so the same batch comes out;
    give the `compute` the generator was trained with for the same reason. With `batch_size`, the
    noise goes through in batches of that size, each normalised on its own as the kept batch was
    (candidate images, `ideal.selection`).
    """
    generator = Generator(settings.nz, settings.ngf, image_size, channels)
    generator.load_state_dict(generator_state)
    generator = _to_format(generator, settings.channels_last).to(compute.device).train()
    images = []
    for batch in noise.split(batch_size or len(noise)):
        with compute.autocast():
            images.append(generator(batch.to(compute.device)).float().cpu())
    return torch.cat(images).contiguous()
