"""The served classifier: loaded once, self-tested, answering top-1 labels one forward at a time.

Its identity (`fingerprint`) is `ideal_pipeline.models.files`' fingerprint of the very bytes the
model is built from: for `.safetensors` that is the architecture, shape, classes and tensors,
so a re-saved copy of the same weights is the same teacher and keeps its cached answers.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ideal_pipeline.models.files import fingerprint_bytes, load_model_bytes, read_model_bytes
from ideal_pipeline.teacher.server.upload import Reject

logger = logging.getLogger(__name__)

SELF_TEST_BATCHES = (1, 2)


class ModelSelfTestError(ValueError):
    """The model cannot label the configured input shape: the server refuses to start."""


def self_test(model: nn.Module, input_shape: tuple[int, int, int], device: str) -> None:
    """Refuse a model that cannot label `input_shape` with batches of 1 and 2 (it would fail every request)."""
    generator = torch.Generator().manual_seed(0)
    for batch in SELF_TEST_BATCHES:
        images = torch.rand(batch, *input_shape, generator=generator).to(device)
        try:
            with torch.inference_mode():
                logits = model(images)
        except Exception as error:  # noqa: BLE001  (torch raises many types; the owner needs the model's own words)
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}"
            raise ModelSelfTestError(
                f"the model fails on a batch of {batch} image(s) of (C, H, W) = {input_shape} ({reason}); "
                "check --input-shape, and that a .pt2 was exported with a dynamic batch dimension"
            ) from None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelSelfTestError(
                f"the model answers {shape} for a batch of {batch} image(s) of {input_shape}; "
                f"a classifier must answer (N, classes) logits"
            )


class ServedModel:
    """A model file behind top-1 labels; `.pt`/`.pt2` files load only with `trusted=True` (they unpickle)."""

    def __init__(self, path: str | Path, input_shape: tuple[int, int, int], device: str, trusted: bool):
        # One read: the fingerprint names exactly the bytes the model is built from.
        data = read_model_bytes(path)
        self.fingerprint = fingerprint_bytes(data, str(path))
        self.device = device
        self._model = load_model_bytes(data, str(path), device, trusted)
        del data
        self_test(self._model, input_shape, device)
        self.largest_labelled_batch = max(SELF_TEST_BATCHES)
        self._lock = threading.Lock()  # one forward at a time: concurrent ones only fight for cores

    def predict(self, array: np.ndarray) -> list[int]:
        """Top-1 labels; a model failure is a 413 (batch larger than it has shown it takes) or a 422, never a 500."""
        with self._lock, torch.inference_mode():
            try:
                logits = self._model(torch.from_numpy(array).to(self.device))
                if logits.dim() != 2 or logits.shape[0] != len(array):
                    raise RuntimeError(f"the model answered {tuple(logits.shape)} for {len(array)} images")
            except Exception as error:
                # The model's own message stays in the owner's log: it would leak its internals to the client.
                fields = {"shape": list(array.shape), "error": type(error).__name__}
                logger.warning("model failed on a batch", exc_info=True, extra={"fields": fields})
                if len(array) > self.largest_labelled_batch:
                    raise Reject(
                        413,
                        f"the model cannot label a batch of {len(array)} images; the largest batch it has labelled "
                        f"is {self.largest_labelled_batch}",
                    ) from None
                raise Reject(422, f"the model cannot label these {len(array)} images") from None
            self.largest_labelled_batch = max(self.largest_labelled_batch, len(array))
            return logits.argmax(1).cpu().tolist()
