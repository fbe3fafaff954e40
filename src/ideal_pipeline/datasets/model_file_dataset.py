"""A served classifier as a self-contained model file (torch.export .pt2 or TorchScript .pt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from torch import nn

from ideal_pipeline.teacher.local import load_model_file, save_model_file


class ModelFileDataset(AbstractDataset[tuple[nn.Module, torch.Tensor], nn.Module]):
    """Saves `(model, example_input)` as a file that loads without this project's code."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> nn.Module:
        return load_model_file(self._filepath)

    def save(self, data: tuple[nn.Module, torch.Tensor]) -> None:
        model, example = data
        partial = self._filepath.with_name(self._filepath.stem + ".partial" + self._filepath.suffix)
        save_model_file(model, partial, example)
        partial.replace(self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
