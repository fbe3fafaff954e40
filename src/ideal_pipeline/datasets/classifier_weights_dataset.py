"""A classifier of this project as safetensors weights plus its architecture: loading runs no code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError
from torch import nn

from ideal_pipeline.models.files import WEIGHTS_SUFFIX, load_model_file, save_model_file


class ClassifierWeightsDataset(AbstractDataset[tuple[nn.Module, torch.Tensor], nn.Module]):
    """Saves `(model, example_input)` as `.safetensors` weights whose metadata names the architecture
    (`models.classifiers.ARCHITECTURES`) and the input shape (the example's); loads the module back.

    No pickle either way: a served or shared file cannot carry code.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        if self._filepath.suffix != WEIGHTS_SUFFIX:
            raise DatasetError(f"{filepath}: a ClassifierWeightsDataset file must end in {WEIGHTS_SUFFIX}")
        self.metadata = metadata

    def load(self) -> nn.Module:
        return load_model_file(self._filepath)

    def save(self, data: tuple[nn.Module, torch.Tensor]) -> None:
        model, example = data
        partial = self._filepath.with_name(self._filepath.stem + ".partial" + WEIGHTS_SUFFIX)
        save_model_file(model, partial, example)
        partial.replace(self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
