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

from ideal_pipeline.errors import UserError
from ideal_pipeline.teacher.holders import new_holder
from ideal_pipeline.teacher.ledger import LedgerError, QueryLedger

logger = logging.getLogger(__name__)


class LabelOnlyTeacher(Protocol):
    """What a black-box teacher offers: top-1 labels, nothing else."""

    def label(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 in [0, 1] -> (N,) int64 labels."""
        ...


class QueryBudgetExceeded(UserError, RuntimeError):
    """Raised before sending a request that would spend more than `max_queries`."""


class PossiblyBilled(Exception):
    """Mixed into a teacher's errors raised after a request may have reached it (and been billed).

    A subclass whose requests surely never left sets `may_have_been_billed = False`.
    """


def may_have_been_billed(error: BaseException) -> bool:
    """Whether a request that ended in `error` may have reached the teacher; an interruption might have."""
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return True
    return isinstance(error, PossiblyBilled) and getattr(error, "may_have_been_billed", True)


class TeacherAnswerError(PossiblyBilled, RuntimeError):
    """The teacher answered, but not one label per image: the request may have been billed."""


class TeacherInputError(UserError, ValueError):
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


def check_planned_spend(planned: int, spent: int, max_queries: int, scope: str) -> None:
    """Fail before any work when a run's plan cannot fit its budget.

    A run pays at most one label per planned sample over all its attempts (`spent` is what its
    scope already paid or reserved), so the plan fits when both are within `max_queries`.
    """
    if max(planned, spent) > max_queries:
        held = f"; {spent} already paid or reserved" if spent else ""
        raise QueryBudgetExceeded(
            f"the run {scope!r} plans {planned} queries (rounds x samples per round){held}, over its budget "
            f"max_queries={max_queries}. Raise ideal.teacher_access.max_queries to {max(planned, spent)} "
            "or plan fewer rounds or samples; labels any run already bought are reused free, but only "
            "counted once they are seen."
        )


class AccountedTeacher:
    """Counts, budgets and persists every query to a label-only teacher.

    `label(images, tag)` takes uint8 images (N, C, H, W), returns int64 labels (N,). Images
    whose label this teacher already gave (in the ledger) cost nothing; the others are sent in
    batches of `max_batch`, each reserved in the ledger first, within `max_queries` for the
    rows whose tag starts with `budget_scope` (the ledger's total spend when None), counting
    every process sharing the ledger. Each batch's labels are committed as soon as they
    arrive, with `tag` (a short purpose string, inside the scope) on every row.

    A batch that surely never reached the teacher has its reservation released. One that may
    have been billed (a `PossiblyBilled` error, an interruption, a killed process) keeps it,
    counted against the budget; every `label` call first sends such batches again exactly as
    they were (the same body: an HTTP teacher replays it under the same Idempotency-Key without
    billing), which settles them. So the bill never exceeds the budget.

    `teacher_fingerprint` names the teacher (`models.files.model_fingerprint`,
    `connect.http_fingerprint`); a ledger holding another teacher's labels is refused at
    construction. Without it, the teacher's own `fingerprint` attribute is used, else its class
    name (tests, benchmarks).
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
        budget_scope: str | None = None,
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
        self.budget_scope = budget_scope
        self.wait_poll_s = wait_poll_s
        self.max_wait_s = max_wait_s  # for labels another caller is buying
        self.queries_sent = 0  # new labels paid through this object
        self.replayed = 0  # labels of possibly billed batches settled by sending them again
        ledger.check_teacher(self.fingerprint)

    def label(
        self, images: torch.Tensor, tag: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        check_images(images, self.input_shape)
        if tag is not None and self.budget_scope is not None and not tag.startswith(self.budget_scope):
            raise ValueError(f"tag {tag!r} is outside this client's budget scope {self.budget_scope!r}")
        keys = [image_key(image) for image in images]
        first: dict[str, int] = {}  # two identical images in one request are one query
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        holder = new_holder()
        self.settle(holder)
        known = self.ledger.lookup(list(first), self.fingerprint)
        pending = [key for key in first if key not in known]
        if progress is not None and len(keys) - len(pending):
            progress(len(keys) - len(pending))
        waiting_since = None
        image_bytes = {key: images[first[key]].contiguous().numpy().tobytes() for key in pending}
        while pending:
            claim = self.ledger.reserve(
                pending,
                image_bytes,
                tuple(images.shape[1:]),
                self.fingerprint,
                holder,
                self.max_queries,
                self.max_batch,
                tag,
                self.budget_scope,
            )
            known.update(claim.known)
            if claim.shortfall_spent is not None:
                self._refuse(claim.shortfall_spent, len(pending) - len(claim.known))
            if claim.keys:
                known.update(self._pay(images[[first[key] for key in claim.keys]], claim.keys, holder, tag))
                waiting_since = None
            elif claim.busy:
                if not self.settle(holder):
                    waiting_since = waiting_since or time.monotonic()
                    self._wait(claim.busy, waiting_since)
                known.update(self.ledger.lookup(claim.busy, self.fingerprint))
            if progress is not None and (claim.known or claim.keys):
                progress(len(claim.known) + len(claim.keys))
            pending = [key for key in pending if key not in known]
        return torch.tensor([known[key] for key in keys], dtype=torch.int64)

    def settle(self, holder: str) -> int:
        """Send every stale, possibly billed batch of this teacher again, exactly as it was; returns the labels settled."""
        settled = 0
        for batch in self.ledger.stale_batches(self.fingerprint):
            stale = self.ledger.claim_batch(batch, holder)
            if stale is None:
                continue
            images = torch.stack(
                [torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(stale.shape) for blob in stale.images]
            )
            labels = self._pay(images, stale.keys, holder, stale.tag, new=False)
            logger.info("settled %d possibly billed labels of an interrupted request by sending it again", len(labels))
            settled += len(labels)
        self.replayed += settled
        return settled

    def _pay(
        self, images: torch.Tensor, keys: list[str], holder: str, tag: str | None, new: bool = True
    ) -> dict[str, int]:
        try:
            labels = self._send(images)
        except BaseException as error:
            if may_have_been_billed(error) or not new:
                self.ledger.mark_unsettled(holder, keys)  # may have been billed: keep counting it
            else:
                self.ledger.release(holder, keys)  # never reached the teacher: give the budget back
            raise
        paid = dict(zip(keys, labels.tolist(), strict=True))
        self.ledger.commit(paid, self.fingerprint, tag)
        if new:
            self.queries_sent += len(paid)
        return paid

    def _refuse(self, spent: int, needed: int) -> None:
        reserved = self.ledger.reserved_queries(self.budget_scope)
        in_flight = f" (of which {reserved} reserved by requests in flight or possibly billed)" if reserved else ""
        scope = f" for {self.budget_scope!r}" if self.budget_scope else ""
        raise QueryBudgetExceeded(
            f"query budget exhausted{scope}: max_queries={self.max_queries}, already spent {spent}{in_flight}, "
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
            raise TeacherAnswerError(
                f"teacher answered {tuple(labels.shape)} {labels.dtype} for {len(images)} images; "
                "expected one integer label per image"
            )
        if self.num_classes is not None and ((labels < 0) | (labels >= self.num_classes)).any():
            raise TeacherAnswerError(f"teacher answered a label outside [0, {self.num_classes})")
        return labels.to(torch.int64)
