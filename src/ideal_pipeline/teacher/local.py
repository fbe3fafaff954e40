"""A teacher served from a model file, behind the label-only interface."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ideal_pipeline.models.files import fingerprint_bytes, load_model_bytes, read_model_bytes


class ModelCache:
    """Models loaded from files, reused while the file's fingerprint is unchanged; at most `size` kept.

    Every round's labelling node builds its own teacher client: loading a .pt2 took 0.26 s a
    round, fingerprinting the file takes milliseconds. The model is built from the very bytes
    fingerprinted, so the fingerprint always names what answers.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._models: OrderedDict[tuple[str, str, str, bool], nn.Module] = OrderedDict()

    def load(self, path: str | Path, device: str | torch.device, trusted: bool) -> tuple[nn.Module, str]:
        """The model in `path` and its fingerprint."""
        data = read_model_bytes(path)
        fingerprint = fingerprint_bytes(data, str(path))
        key = (str(Path(path).resolve()), fingerprint, str(device), trusted)
        if key not in self._models:
            self._models[key] = load_model_bytes(data, key[0], device, trusted)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key], fingerprint


class LocalModelTeacher:
    """Label-only view of a model file: `label` is the only thing it offers, besides its fingerprint.

    The model lives in a closure, not an attribute, so no caller can reach its logits.
    """

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 1000,
        *,
        trusted: bool = False,
        cache: ModelCache | None = None,
    ):
        model, self.fingerprint = (cache or ModelCache(size=1)).load(path, device, trusted)

        @torch.inference_mode()
        def top1(images: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [
                    model(images[i : i + batch_size].to(device)).argmax(1).cpu()
                    for i in range(0, len(images), batch_size)
                ]
            )

        self._top1: Callable[[torch.Tensor], torch.Tensor] = top1
        self._description = f"LocalModelTeacher({str(path)!r})"

    def label(self, images: torch.Tensor) -> torch.Tensor:
        return self._top1(images).to(torch.int64)

    def __repr__(self) -> str:
        return self._description
