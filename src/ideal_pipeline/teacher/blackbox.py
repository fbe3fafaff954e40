"""The teacher as a label-only black box, and the one component that pays for its labels.

Everything that asks the teacher for a label goes through `AccountedTeacher`: it counts
queries, refuses to exceed the budget *before* sending, and persists each paid label in a
`QueryLedger` keyed by the exact bytes of the image sent, so reruns never pay twice.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Protocol

import torch

from ideal_pipeline.teacher.ledger import QueryLedger

logger = logging.getLogger(__name__)


class LabelOnlyTeacher(Protocol):
    """What a black-box teacher offers: top-1 labels, nothing else."""

    def label(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 in [0, 1] -> (N,) int64 labels."""
        ...


class QueryBudgetExceeded(RuntimeError):
    """Raised before sending a request that would spend more than `max_queries`."""


class TeacherInputError(ValueError):
    """The images cannot be sent to the teacher (wrong dtype, shape, range)."""


def image_key(image: torch.Tensor) -> str:
    """Content key of one uint8 image (C, H, W): the label belongs to exactly these bytes."""
    header = ("x".join(map(str, image.shape)) + ":").encode()
    return hashlib.sha256(header + image.contiguous().numpy().tobytes()).hexdigest()


def check_images(images: torch.Tensor, shape: tuple[int, int, int] | None = None) -> None:
    """Fail with a clear message on anything but uint8 (N, C, H, W) images of `shape`."""
    if not isinstance(images, torch.Tensor):
        raise TeacherInputError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TeacherInputError(f"images must be uint8 (the stored format), got {images.dtype}")
    if images.dim() != 4:
        raise TeacherInputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise TeacherInputError(
            f"images have shape (C, H, W) = {tuple(images.shape[1:])} but the teacher expects {tuple(shape)}"
        )


class AccountedTeacher:
    """Counts, budgets and persists every query to a label-only teacher.

    `label(images)` takes uint8 images (N, C, H, W), returns int64 labels (N,). Images whose
    label is already in the ledger cost nothing; the others are sent in chunks of
    `max_batch`, after checking that the ledger's total spend plus the chunk stays within
    `max_queries`, and each chunk's labels are committed to the ledger as soon as they arrive.
    """

    def __init__(
        self,
        teacher: LabelOnlyTeacher,
        ledger: QueryLedger,
        max_queries: int,
        max_batch: int = 500,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
    ):
        if max_queries < 0:
            raise ValueError(f"max_queries must be >= 0, got {max_queries}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._teacher = teacher
        self.ledger = ledger
        self.max_queries = int(max_queries)
        self.max_batch = int(max_batch)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.queries_sent = 0  # by this object, i.e. paid in this process

    def label(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        check_images(images, self.input_shape)
        keys = [image_key(image) for image in images]
        known = self.ledger.lookup(keys)
        missing = [i for i, key in enumerate(keys) if key not in known]
        # Two identical images in one request are one query.
        unique_missing = list({keys[i]: i for i in missing}.values())
        if progress is not None and len(keys) - len(unique_missing):
            progress(len(keys) - len(unique_missing))
        for start in range(0, len(unique_missing), self.max_batch):
            chunk = unique_missing[start : start + self.max_batch]
            spent = self.ledger.paid_queries()
            if spent + len(chunk) > self.max_queries:
                raise QueryBudgetExceeded(
                    f"query budget exhausted: max_queries={self.max_queries}, already spent {spent}, "
                    f"this request needs {len(unique_missing) - start} more; nothing was sent. "
                    "Raise max_queries to pay for them."
                )
            labels = self._send(images[chunk])
            self.ledger.record({keys[i]: int(label) for i, label in zip(chunk, labels.tolist())})
            self.queries_sent += len(chunk)
            known.update({keys[i]: int(label) for i, label in zip(chunk, labels.tolist())})
            if progress is not None:
                progress(len(chunk))
        return torch.tensor([known[key] for key in keys], dtype=torch.int64)

    def _send(self, images: torch.Tensor) -> torch.Tensor:
        labels = self._teacher.label(images.float().div(255.0))
        labels = torch.as_tensor(labels)
        if labels.shape != (len(images),) or labels.dtype not in (torch.int64, torch.int32):
            raise RuntimeError(
                f"teacher answered {tuple(labels.shape)} {labels.dtype} for {len(images)} images; "
                "expected one integer label per image"
            )
        if self.num_classes is not None and ((labels < 0) | (labels >= self.num_classes)).any():
            raise RuntimeError(f"teacher answered a label outside [0, {self.num_classes})")
        return labels.to(torch.int64)
