"""The teacher as a label-only black box, and the one component that pays for its labels.

Everything that asks the teacher for a label goes through `AccountedTeacher`: it counts
queries, reserves their cost in the `QueryLedger` *before* sending (so processes sharing a
ledger stay within the budget together), and persists each paid label keyed by the exact
bytes of the image sent and bound to the teacher that gave it, so reruns never pay twice and
never receive another teacher's labels.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import torch

from ideal_pipeline.teacher.ledger import LedgerError, QueryLedger

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


def check_planned_spend(ledger: QueryLedger, planned_queries: int, max_queries: int, own_tag_prefix: str) -> None:
    """Fail before any work when a run's plan cannot fit the budget, given what the ledger already holds.

    Labels tagged with `own_tag_prefix` (this run's, from an earlier attempt) are reused free;
    everything else in the ledger (other runs' labels, reservations in flight) counts as spent.
    """
    held = ledger.spent_queries(own_tag_prefix)
    other = ledger.spent_queries() - held
    if other + planned_queries > max_queries:
        raise QueryBudgetExceeded(
            f"the run plans {planned_queries} queries ({held} of them already in the ledger from an earlier "
            f"attempt, tagged {own_tag_prefix!r}, reused free) and {ledger.path} holds {other} other paid or "
            f"reserved queries: {other} + {planned_queries} = {other + planned_queries} > max_queries={max_queries}. "
            "Lower the plan, raise max_queries, or use a new ledger file."
        )


class AccountedTeacher:
    """Counts, budgets and persists every query to a label-only teacher.

    `label(images, tag)` takes uint8 images (N, C, H, W), returns int64 labels (N,). Images
    whose label this teacher already gave (in the ledger) cost nothing; the others are sent in
    chunks of `max_batch`, each reserved in the ledger first, within `max_queries` for the
    ledger's total spend (labels + reservations of every process sharing it). Each chunk's
    labels are committed as soon as they arrive, with `tag` (a short purpose string) on every
    row. A chunk whose request fails with an error has its reservation released; one whose
    process is killed keeps it (see `teacher.ledger`): the budget is never exceeded.

    `teacher_fingerprint` names the teacher (`local.model_file_fingerprint`, `connect.http_fingerprint`); a
    ledger holding another teacher's labels is refused at construction. Without it, the
    teacher's own `fingerprint` attribute is used, else its class name (tests, benchmarks).
    """

    def __init__(
        self,
        teacher: LabelOnlyTeacher,
        ledger: QueryLedger,
        max_queries: int,
        max_batch: int = 500,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        teacher_fingerprint: str | None = None,
        wait_poll_s: float = 0.05,
        max_wait_s: float = 3600.0,
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
        self.fingerprint = (
            teacher_fingerprint or getattr(teacher, "fingerprint", None) or f"unidentified:{type(teacher).__qualname__}"
        )
        self.wait_poll_s = wait_poll_s
        self.max_wait_s = max_wait_s  # for labels another caller is buying
        self.queries_sent = 0  # by this object, i.e. paid in this process
        ledger.check_teacher(self.fingerprint)

    def label(
        self, images: torch.Tensor, tag: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        check_images(images, self.input_shape)
        keys = [image_key(image) for image in images]
        first: dict[str, int] = {}  # two identical images in one request are one query
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        known = self.ledger.lookup(list(first), self.fingerprint)
        pending = [key for key in first if key not in known]
        if progress is not None and len(keys) - len(pending):
            progress(len(keys) - len(pending))
        with self.ledger.holding() as holder:
            waiting_since = None
            while pending:
                claim = self.ledger.reserve(pending, self.fingerprint, holder, self.max_queries, self.max_batch, tag)
                known.update(claim.known)
                if claim.shortfall_spent is not None:
                    self._refuse(claim.shortfall_spent, len(pending) - len(claim.known))
                if claim.keys:
                    known.update(self._pay(images, first, claim.keys, holder, tag))
                    waiting_since = None
                elif claim.busy:
                    waiting_since = waiting_since or time.monotonic()
                    self._wait(claim.busy, waiting_since)
                if progress is not None and (claim.known or claim.keys):
                    progress(len(claim.known) + len(claim.keys))
                pending = [key for key in pending if key not in known]
        return torch.tensor([known[key] for key in keys], dtype=torch.int64)

    def _pay(self, images: torch.Tensor, first: dict[str, int], keys: list[str], holder: str, tag: str | None) -> dict:
        try:
            labels = self._send(images[[first[key] for key in keys]])
        except Exception:  # refused, unreachable or nonsense: not billed, give the budget back
            self.ledger.release(holder, keys)
            raise
        paid = dict(zip(keys, labels.tolist()))
        self.ledger.commit(paid, self.fingerprint, tag)
        self.queries_sent += len(paid)
        return paid

    def _refuse(self, spent: int, needed: int) -> None:
        reserved = self.ledger.reserved_queries()
        in_flight = f" (of which {reserved} reserved by requests in flight or interrupted)" if reserved else ""
        raise QueryBudgetExceeded(
            f"query budget exhausted: max_queries={self.max_queries}, already spent {spent}{in_flight}, "
            f"this request needs {needed} more; nothing was sent. Raise max_queries to pay for them."
        )

    def _wait(self, busy: list[str], since: float) -> None:
        """Another live caller is buying some of these labels: wait for them rather than pay twice."""
        if time.monotonic() - since > self.max_wait_s:
            raise LedgerError(
                f"{len(busy)} images stayed reserved in {self.ledger.path} by another caller for over "
                f"{self.max_wait_s:.0f} s (a live process still sending them, or a process on another machine, "
                "whose liveness cannot be checked: share a ledger between the processes of one machine only)"
            )
        time.sleep(self.wait_poll_s)

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
