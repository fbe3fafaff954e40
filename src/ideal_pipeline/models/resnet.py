"""CIFAR-style ResNets: a 3x3 stem (no max-pool) for 32x32 inputs, BasicBlocks, global average pool.

- ResNet-18 / ResNet-34: the reference code's networks (SonyResearch/IDEAL nets.py): 64-128-256-512
  channels, [2, 2, 2, 2] / [3, 4, 6, 3] blocks; about 11.2M / 21.3M parameters.
- ResNet-20 / ResNet-8: the small CIFAR ResNets of He et al. (2016), 16-32-64 channels and 3 / 1
  blocks per stage (6n+2 layers); about 0.27M / 0.08M parameters, sized for a 2-core CPU. The
  shortcuts that change shape are 1x1 convolutions + BatchNorm, as in the reference code's blocks
  (He et al.'s zero-padded identity shortcuts would save about 2K parameters).

Global average pooling makes every network take any input side (28x28 Fashion-MNIST as well).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual shortcut (a 1x1 conv+BN where the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem at `widths[0]`, one stage per width (the first at stride 1, the others stride 2)."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for block in range(count):
                stage.append(BasicBlock(in_planes, width, stride=2 if index > 0 and block == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class ResNet18(CifarResNet):
    def __init__(self, channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__((64, 128, 256, 512), (2, 2, 2, 2), channels, num_classes)


class ResNet34(CifarResNet):
    def __init__(self, channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__((64, 128, 256, 512), (3, 4, 6, 3), channels, num_classes)


class ResNet20(CifarResNet):
    def __init__(self, channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__((16, 32, 64), (3, 3, 3), channels, num_classes)


class ResNet8(CifarResNet):
    def __init__(self, channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__((16, 32, 64), (1, 1, 1), channels, num_classes)
