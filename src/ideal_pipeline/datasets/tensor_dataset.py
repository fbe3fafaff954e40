"""Tensors on disk as safetensors: no pickle, so loading a file never runs code."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path
from safetensors.torch import load as load_safetensors

from ideal_pipeline.models.files import canonical_safetensors

_SINGLE = "tensor"


class TensorDataset(AbstractDataset[torch.Tensor | dict[str, torch.Tensor], Any]):
    """A tensor, or a flat dict of named tensors, in one `.safetensors` file.

    Saving writes to a temporary file and renames it, so an interrupted save never leaves
    a half-written artifact behind; the same tensors always give the same bytes.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol)
        self.metadata = metadata

    def load(self) -> torch.Tensor | dict[str, torch.Tensor]:
        path = get_filepath_str(self._filepath, self._protocol)
        with self._fs.open(path, "rb") as f:
            tensors = load_safetensors(f.read())
        return tensors[_SINGLE] if list(tensors) == [_SINGLE] else tensors

    def save(self, data: torch.Tensor | dict[str, torch.Tensor]) -> None:
        tensors = {_SINGLE: data} if isinstance(data, torch.Tensor) else data
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise DatasetError(f"{self._filepath}: expected a tensor or a dict of tensors, got {type(data).__name__}")
        payload = canonical_safetensors(tensors)
        path = get_filepath_str(self._filepath, self._protocol)
        self._fs.makedirs(str(self._filepath.parent), exist_ok=True)
        partial = f"{path}.partial"
        with self._fs.open(partial, "wb") as f:
            f.write(payload)
        self._fs.mv(partial, path)

    def _exists(self) -> bool:
        return self._fs.exists(get_filepath_str(self._filepath, self._protocol))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}
