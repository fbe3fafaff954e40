"""A teacher served from a model file, behind the label-only interface.

Two kinds of model file, two levels of trust:
- `.safetensors` (this project's format): weights only, plus the architecture's name and shape
  in the file's metadata. Loading builds that architecture from our code and copies the
  weights in: no pickle, nothing in the file is executed, so it needs no trust.
- TorchScript (`.pt`) and torch.export (`.pt2`) files carry their own code and are read with
  pickle (`torch.export.load` calls `torch.load(weights_only=False)` on its payloads), so a
  crafted file runs whatever its author wrote. They load only with `trusted=True`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ideal_pipeline.models.classifiers import ARCHITECTURES, build_classifier

WEIGHTS_SUFFIX = ".safetensors"
_FORMAT = "ideal_pipeline.classifier.v1"
TRUST_HINT = (
    "set external_teacher.trusted_model_file: true (kedro run --pipelines byo), "
    "ideal.teacher_access.trusted_model_file: true (teacher_access.model_path), "
    "or pass --trust-model-file to `ideal-teacher serve`"
)


class UntrustedModelFile(ValueError):
    """A model file that can execute code on loading, and nobody said it is trusted."""


class _ExportedClassifier(nn.Module):
    """An exported program as a plain module; it was exported in eval mode and stays so."""

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> _ExportedClassifier:
        return self  # torch.export forbids train()/eval(); its graph is fixed in eval mode


def _fingerprint(data: bytes) -> str:
    return "model-file:sha256:" + hashlib.sha256(data).hexdigest()


def model_file_fingerprint(path: str | Path) -> str:
    """The teacher's identity for the ledger: a hash of the model file's bytes."""
    return _fingerprint(_read(path))


# ---------------------------------------------------------------------------- safetensors: our format
def architecture_name(model: nn.Module) -> str:
    """The name under which `model`'s class is registered in `models.classifiers.ARCHITECTURES`."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"{type(model).__name__} is not one of this project's architectures {sorted(ARCHITECTURES)}; "
        "save it as a TorchScript .pt or torch.export .pt2 file instead"
    )


def save_classifier_weights(
    model: nn.Module, path: str | Path, architecture: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    """Weights as safetensors; the metadata says how to rebuild the module around them."""
    channels, height, width = (int(v) for v in input_shape)
    metadata = {
        "format": _FORMAT,
        "architecture": architecture,
        "input_shape": f"{channels},{height},{width}",
        "num_classes": str(int(num_classes)),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save_safetensors(tensors, metadata=metadata))


def _weights_metadata(data: bytes, name: str) -> dict[str, str]:
    header_size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if not 2 <= header_size <= len(data) - 8:
        raise ValueError(f"{name} is not a safetensors file")
    try:
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"{name} is not a safetensors file (unreadable header)") from None
    missing = [key for key in ("format", "architecture", "input_shape", "num_classes") if key not in metadata]
    if missing or metadata["format"] != _FORMAT:
        raise ValueError(
            f"{name} is a safetensors file but not a classifier of this project (metadata {sorted(metadata)}, "
            f"missing {missing}); save one with ideal_pipeline.teacher.local.save_classifier_weights"
        )
    return metadata


def load_classifier_weights(data: bytes, name: str = "weights", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the architecture named in the metadata and load the weights into it (no pickle)."""
    metadata = _weights_metadata(data, name)
    try:
        channels, height, width = (int(v) for v in metadata["input_shape"].split(","))
        num_classes = int(metadata["num_classes"])
    except ValueError:
        raise ValueError(f"{name}: malformed input_shape/num_classes metadata {metadata}") from None
    if height != width or min(channels, height, num_classes) < 1:
        raise ValueError(
            f"{name}: input_shape {metadata['input_shape']} and num_classes {num_classes} do not fit a classifier"
        )
    model = build_classifier(metadata["architecture"], channels, num_classes, height)
    try:
        model.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError) as error:
        raise ValueError(f"{name}: weights do not fit a {metadata['architecture']} of that shape: {error}") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------- any model file
def _load_bytes(data: bytes, name: str, device: str | torch.device, trusted: bool) -> nn.Module:
    if name.endswith(WEIGHTS_SUFFIX):
        return load_classifier_weights(data, name, device)
    kind = "torch.export (.pt2)" if name.endswith(".pt2") else "TorchScript (.pt)"
    if not trusted:
        raise UntrustedModelFile(
            f"{name}: a {kind} file is read with pickle, which runs any code its author put in it; it is "
            f"loaded only if you trust where it came from. If you do, {TRUST_HINT}. This project's own "
            f"models are {WEIGHTS_SUFFIX} files, which need no trust (docs/bring-your-own-teacher.md)."
        )
    try:
        if name.endswith(".pt2"):
            return _ExportedClassifier(torch.export.load(io.BytesIO(data)).module()).to(device)
        return torch.jit.load(io.BytesIO(data), map_location=device).eval()
    except Exception as error:  # torch raises many types for a bad file
        raise ValueError(f"{name} is not a TorchScript (.pt) or torch.export (.pt2) model: {error}") from error


def _read(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher model file not found: {path}")
    return path.read_bytes()


def load_model_file(path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = False) -> nn.Module:
    """Load a classifier: `.safetensors` always; TorchScript `.pt` / torch.export `.pt2` only when `trusted`."""
    return _load_bytes(_read(path), str(path), device, trusted)


def save_model_file(model: nn.Module, path: str | Path, example: torch.Tensor) -> None:
    """Save `model` as `.safetensors` (our classifiers), `.pt2` (torch.export) or `.pt` (TorchScript).

    For `.safetensors` the architecture is `model`'s registered name, the shape `example`'s.
    TorchScript tracing (torch.jit is deprecated) is what most served models still ship as.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    if path.suffix == WEIGHTS_SUFFIX:
        with torch.no_grad():
            num_classes = model(example[:1]).shape[1]
        save_classifier_weights(model, path, architecture_name(model), tuple(example.shape[1:]), num_classes)
    elif path.suffix == ".pt2":
        batch = {0: torch.export.Dim.DYNAMIC}  # any batch size
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)), str(path))
    else:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, example), str(path))


_CACHE: OrderedDict[tuple[str, str, str, bool], nn.Module] = OrderedDict()
_CACHE_SIZE = 4


def load_model_file_cached(path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = False) -> nn.Module:
    """`load_model_file`, reusing the model already loaded in this process while the file's bytes are unchanged.

    Every round's labelling node builds its own teacher client: loading a .pt2 took 0.26 s a
    round, hashing the file to know it is unchanged takes milliseconds. The model is built from
    the very bytes hashed, so the fingerprint always names what answers.
    """
    model, _ = _load_with_fingerprint(path, device, trusted)
    return model


def _load_with_fingerprint(path: str | Path, device: str | torch.device, trusted: bool) -> tuple[nn.Module, str]:
    data = _read(path)
    fingerprint = _fingerprint(data)
    key = (str(Path(path).resolve()), fingerprint, str(device), trusted)
    if key not in _CACHE:
        _CACHE[key] = _load_bytes(data, key[0], device, trusted)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key], fingerprint


class LocalModelTeacher:
    """Label-only view of a model file: `label` is the only thing it offers, besides its fingerprint.

    The model lives in a closure, not an attribute, so no caller can reach its logits.
    """

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 1000, *, trusted: bool = False
    ):
        model, self.fingerprint = _load_with_fingerprint(path, device, trusted)

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
