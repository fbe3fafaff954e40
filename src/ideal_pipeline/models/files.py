"""Model files: how a classifier is written and read, and the one fingerprint that names it.

Two kinds of model file, two levels of trust:
- `.safetensors` (this project's format): weights only, plus the architecture's name and shape
  in the file's metadata. Loading builds that architecture from our code and copies the
  weights in: no pickle, nothing in the file is executed, so it needs no trust. The file is
  written canonically (header keys sorted), so identical weights give identical bytes.
- TorchScript (`.pt`) and torch.export (`.pt2`) files carry their own code and are read with
  pickle (`torch.export.load` calls `torch.load(weights_only=False)` on its payloads), so a
  crafted file runs whatever its author wrote. They load only with `trusted=True`.

`model_fingerprint` is a teacher's identity in ledgers and in the HTTP server's idempotency
cache: for `.safetensors` it hashes what answers queries (architecture, shape, classes and every
tensor), not the file's bytes, so re-saving the same weights never makes a new teacher.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ideal_pipeline.errors import UserError
from ideal_pipeline.models.classifiers import ARCHITECTURES, build_classifier

WEIGHTS_SUFFIX = ".safetensors"
_FORMAT = "ideal_pipeline.classifier.v1"
_METADATA_KEYS = ("format", "architecture", "input_shape", "num_classes")
TRUST_HINT = (
    "set external_teacher.trusted_model_file: true (kedro run --pipelines byo), "
    "ideal.teacher_access.trusted_model_file: true (teacher_access.model_path), "
    "or pass --trust-model-file to `ideal-teacher serve`"
)


class UntrustedModelFile(UserError, ValueError):
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


# ---------------------------------------------------------------------------- safetensors, canonical
def _split_header(data: bytes, name: str) -> tuple[dict, bytes]:
    header_size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if not 2 <= header_size <= len(data) - 8:
        raise ValueError(f"{name} is not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + header_size])
        header.get("__metadata__")
    except (ValueError, AttributeError):
        raise ValueError(f"{name} is not a safetensors file (unreadable header)") from None
    return header, data[8 + header_size :]


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes with the header's keys sorted: the same tensors and metadata give the same bytes.

    The safetensors library writes its metadata map in an order that changes from process to process.
    """
    data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    header, body = _split_header(data, "tensors")
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the tensor data to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + body


def architecture_name(model: nn.Module) -> str:
    """The name under which `model`'s class is registered in `models.classifiers.ARCHITECTURES`."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"{type(model).__name__} is not one of this project's architectures {sorted(ARCHITECTURES)}; "
        "save it as a TorchScript .pt or torch.export .pt2 file instead"
    )


def classifier_weights_bytes(
    model: nn.Module, architecture: str, input_shape: tuple[int, int, int], num_classes: int
) -> bytes:
    """Weights as canonical safetensors; the metadata says how to rebuild the module around them."""
    channels, height, width = (int(v) for v in input_shape)
    metadata = {
        "format": _FORMAT,
        "architecture": architecture,
        "input_shape": f"{channels},{height},{width}",
        "num_classes": str(int(num_classes)),
    }
    return canonical_safetensors(model.state_dict(), metadata)


def save_classifier_weights(
    model: nn.Module, path: str | Path, architecture: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    """`classifier_weights_bytes` written to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(classifier_weights_bytes(model, architecture, input_shape, num_classes))


def weights_metadata(data: bytes, name: str) -> dict[str, str]:
    """The classifier metadata of a `.safetensors` file of this project (a clear error otherwise)."""
    header, _ = _split_header(data, name)
    metadata = header.get("__metadata__") or {}
    missing = [key for key in _METADATA_KEYS if key not in metadata]
    if missing or metadata["format"] != _FORMAT:
        raise ValueError(
            f"{name} is a safetensors file but not a classifier of this project (metadata {sorted(metadata)}, "
            f"missing {missing}); save one with ideal_pipeline.models.files.save_classifier_weights"
        )
    return metadata


def weights_shape(data: bytes, name: str) -> tuple[tuple[int, int, int], int]:
    """The (C, H, W) input shape and the number of classes a `.safetensors` classifier declares."""
    metadata = weights_metadata(data, name)
    try:
        channels, height, width = (int(v) for v in metadata["input_shape"].split(","))
        num_classes = int(metadata["num_classes"])
    except ValueError:
        raise ValueError(f"{name}: malformed input_shape/num_classes metadata {metadata}") from None
    if height != width or min(channels, height, num_classes) < 1:
        raise ValueError(
            f"{name}: input_shape {metadata['input_shape']} and num_classes {num_classes} do not fit a classifier"
        )
    return (channels, height, width), num_classes


def load_classifier_weights(data: bytes, name: str = "weights", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the architecture named in the metadata and load the weights into it (no pickle)."""
    (channels, height, _), num_classes = weights_shape(data, name)
    architecture = weights_metadata(data, name)["architecture"]
    model = build_classifier(architecture, channels, num_classes, height)
    try:
        model.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError) as error:
        raise ValueError(f"{name}: weights do not fit a {architecture} of that shape: {error}") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------- any model file
def fingerprint_bytes(data: bytes, name: str) -> str:
    """`model_fingerprint` of a file's bytes already read."""
    if not name.endswith(WEIGHTS_SUFFIX):
        return "model:sha256:" + hashlib.sha256(data).hexdigest()
    metadata = weights_metadata(data, name)
    header, body = _split_header(data, name)
    digest = hashlib.sha256(json.dumps({k: metadata[k] for k in _METADATA_KEYS}, sort_keys=True).encode())
    for tensor in sorted(k for k in header if k != "__metadata__"):
        info = header[tensor]
        start, end = info["data_offsets"]
        digest.update(json.dumps([tensor, info["dtype"], info["shape"]]).encode())
        digest.update(body[start:end])
    return "model:sha256:" + digest.hexdigest()


def model_fingerprint(path: str | Path) -> str:
    """A model's identity: `.safetensors` by architecture, shape, classes and tensors; other files by their bytes."""
    return fingerprint_bytes(read_model_bytes(path), str(path))


def file_bytes_fingerprint(data: bytes) -> str:
    """The identity earlier versions gave a model file (a hash of its bytes): ledgers bound to it are recognised."""
    return "model-file:sha256:" + hashlib.sha256(data).hexdigest()


def load_model_bytes(data: bytes, name: str, device: str | torch.device, trusted: bool) -> nn.Module:
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


def read_model_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher model file not found: {path}")
    return path.read_bytes()


def load_model_file(path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = False) -> nn.Module:
    """Load a classifier: `.safetensors` always; TorchScript `.pt` / torch.export `.pt2` only when `trusted`."""
    return load_model_bytes(read_model_bytes(path), str(path), device, trusted)


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
