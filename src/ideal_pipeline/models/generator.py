"""IDEAL's image generator ("Generator_2" in the reference code)."""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Maps noise (N, nz) to images (N, channels, size, size) in [0, 1].

    Architecture of the reference code: a linear stem to a (size/4)^2 map, two
    upsample+conv stages, and a sigmoid so that images need no normalisation.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, image_size: int = 28, channels: int = 1):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two x2 upsamplings), got {image_size}")
        self.nz = nz
        self.init_size = image_size // 4
        self.stem = nn.Sequential(nn.Linear(nz, 2 * ngf * self.init_size**2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, channels, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.stem(z).view(z.shape[0], -1, self.init_size, self.init_size)
        return self.body(out)
