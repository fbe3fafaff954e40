"""The labelled pool: every earlier round's synthetic images and teacher labels, read as one.

Each round writes its own files (`round_NNN/synthetic_images.safetensors`, `teacher_labels...`);
this load-only dataset reads rounds 1..r of them. The reader keeps each round's tensors while the
file's size and modification time are unchanged, so a run of E rounds reads each file once
instead of E times; it keeps one entry per file, hence at most the run's own pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError
from safetensors.torch import load_file

_SINGLE = "tensor"


class LabelledPool:
    """Reader of the round folders under `root`; `load(r)` gives rounds 1..r concatenated."""

    def __init__(self, root: Path, round_folder: str, images_file: str, labels_file: str):
        self.root = root
        self._round_folder = round_folder
        self._images_file = images_file
        self._labels_file = labels_file
        self._cache: dict[Path, tuple[tuple[int, int], torch.Tensor]] = {}  # path -> (mtime, size), tensor

    def _read(self, path: Path) -> torch.Tensor:
        """One round's tensor, read again only when its file changed."""
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != version:
            cached = self._cache[path] = (version, load_file(path)[_SINGLE])
        return cached[1]

    def round_path(self, round_index: int, filename: str) -> Path:
        return self.root / self._round_folder.format(round=round_index) / filename

    def load(self, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of rounds 1..`rounds` (empty for 0)."""
        images, labels = [], []
        for r in range(1, rounds + 1):
            image_path, label_path = self.round_path(r, self._images_file), self.round_path(r, self._labels_file)
            if not (image_path.is_file() and label_path.is_file()):
                raise DatasetError(
                    f"round {r}'s labelled samples are missing ({image_path.parent}): run that round first"
                )
            images.append(self._read(image_path))
            labels.append(self._read(label_path))
            if len(images[-1]) != len(labels[-1]):
                raise DatasetError(f"round {r} has {len(images[-1])} images but {len(labels[-1])} labels")
        if not images:
            return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        return torch.cat(images), torch.cat(labels)

    def __repr__(self) -> str:
        return f"LabelledPool({str(self.root)!r})"


class LabelledPoolDataset(AbstractDataset[None, LabelledPool]):
    """Load-only: the rounds' own datasets write the files, this one reads them together."""

    def __init__(
        self,
        path: str,
        round_folder: str = "round_{round:03d}",
        images_file: str = "synthetic_images.safetensors",
        labels_file: str = "teacher_labels.safetensors",
        metadata: dict[str, Any] | None = None,
    ):
        self._pool = LabelledPool(Path(path), round_folder, images_file, labels_file)
        self.metadata = metadata

    def load(self) -> LabelledPool:
        return self._pool

    def save(self, data: None) -> None:
        raise DatasetError("the labelled pool is written round by round by the rounds' own datasets")

    def _exists(self) -> bool:
        return True  # an empty pool is a valid pool (round 1 reads nothing from it)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._pool.root)}
