"""Classifiers used as victim teacher and as student.

The student's architecture is a free choice: a real black box's architecture is unknown.
"""

from __future__ import annotations

import torch
from torch import nn

from ideal_pipeline.models.resnet import ResNet8, ResNet18, ResNet20, ResNet34


class LeNet(nn.Module):
    """The reference code's small CNN ("lenet"): two 5x5 conv+BN+pool blocks (16, 32), FC 1568 -> C."""

    def __init__(self, channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * (image_size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ConvNet(nn.Module):
    """Two conv+pool blocks and a hidden FC layer: >90% on Fashion-MNIST in a few CPU epochs."""

    def __init__(self, channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * (image_size // 4) ** 2, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TanhNet(nn.Module):
    """LeNet-5 in its original style: tanh, average pooling, no BatchNorm, two hidden FC layers.

    A victim family unlike the others: defaults chosen on one victim must hold across architectures.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * (image_size // 4) ** 2, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES = {
    "lenet": LeNet,
    "convnet": ConvNet,
    "tanhnet": TanhNet,
    # CIFAR-style ResNets (models/resnet.py): the reference code's 18 and 34, the small 20 and 8 for CPUs.
    "resnet8": ResNet8,
    "resnet20": ResNet20,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
}


def build_classifier(architecture: str, channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Instantiate a classifier by name; unknown names fail with the list of known ones."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return cls(channels=channels, num_classes=num_classes, image_size=image_size)
