"""A teacher served from a self-contained model file, behind the label-only interface."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn


class _ExportedClassifier(nn.Module):
    """An exported program as a plain module; it was exported in eval mode and stays so."""

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> "_ExportedClassifier":
        return self  # torch.export forbids train()/eval(); its graph is fixed in eval mode


class UntrustedModelFile(ValueError):
    """A model file that can execute code on loading, and nobody said it is trusted."""


def load_model_file(path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = True) -> nn.Module:
    """Load a TorchScript (.pt) or torch.export (.pt2) classifier without our code.

    Both formats are read with pickle, which runs whatever code the file's author put in it:
    with `trusted=False` they are refused. (The `ledger` branch replaces this module with the
    safetensors-first loader whose default is `trusted=False`; the server passes it explicitly.)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher model file not found: {path}")
    if not trusted:
        raise UntrustedModelFile(
            f"{path}: a TorchScript (.pt) or torch.export (.pt2) file is read with pickle, which runs any code "
            "its author put in it; it is loaded only if you trust where it came from. If you do, pass "
            "--trust-model-file to `ideal-teacher serve`."
        )
    try:
        if path.suffix == ".pt2":
            return _ExportedClassifier(torch.export.load(str(path)).module()).to(device)
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as error:  # torch raises many types for a bad file
        raise ValueError(f"{path} is not a TorchScript (.pt) or torch.export (.pt2) model: {error}") from error


def save_model_file(model: nn.Module, path: str | Path, example: torch.Tensor) -> None:
    """Save `model` as a file that loads without our code.

    `.pt2` uses torch.export; `.pt` uses TorchScript tracing (torch.jit is deprecated but
    is what most served models still ship as).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    if path.suffix == ".pt2":
        batch = {0: torch.export.Dim.DYNAMIC}  # any batch size
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)), str(path))
    else:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, example), str(path))


@functools.lru_cache(maxsize=4)
def _load_by_content(path: str, sha256: str, device: str) -> nn.Module:
    return load_model_file(path, device)


def load_model_file_cached(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """`load_model_file`, reusing the model already loaded in this process while the file's bytes are unchanged.

    Every round's labelling node builds its own teacher client: loading a .pt2 took 0.26 s a
    round, hashing the file to know it is unchanged takes milliseconds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher model file not found: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return _load_by_content(str(path.resolve()), digest, str(device))


class LocalModelTeacher:
    """Label-only view of a model file: `label` is the only thing it offers.

    The model lives in a closure, not an attribute, so no caller can reach its logits.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 1000):
        model = load_model_file_cached(path, device)

        @torch.inference_mode()
        def top1(images: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
            )

        self._top1: Callable[[torch.Tensor], torch.Tensor] = top1
        self._description = f"LocalModelTeacher({str(path)!r})"

    def label(self, images: torch.Tensor) -> torch.Tensor:
        return self._top1(images).to(torch.int64)

    def __repr__(self) -> str:
        return self._description
