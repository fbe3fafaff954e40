"""Open a label-only connection to the teacher named by the parameters or its API card."""

from __future__ import annotations

from typing import Any

from ideal_pipeline.teacher.blackbox import AccountedTeacher, LabelOnlyTeacher
from ideal_pipeline.teacher.ledger import QueryLedger

TEACHER_KINDS = ("model_file", "http")


def connect_teacher(access: dict[str, Any], api_card: dict[str, Any]) -> LabelOnlyTeacher:
    """`access` is `params:ideal.teacher_access`; `api_card` is what the teacher's owner publishes.

    `access.kind` (default: the card's) picks the transport: `model_file` (a TorchScript or
    torch.export file on disk) or `http` (a remote label-only endpoint).
    """
    kind = access.get("kind") or api_card.get("kind", "model_file")
    if kind == "model_file":
        from ideal_pipeline.teacher.local import LocalModelTeacher

        path = access.get("model_path") or api_card.get("model_path")
        if not path:
            raise ValueError("teacher_access.kind=model_file needs a model_path (in the parameters or the API card)")
        return LocalModelTeacher(path, device=access.get("device", "cpu"))
    if kind == "http":
        from ideal_pipeline.teacher.http_client import HttpTeacher

        return HttpTeacher.from_access(access)
    raise ValueError(f"unknown teacher kind {kind!r}; choose one of {TEACHER_KINDS}")


def accounted_teacher(access: dict[str, Any], api_card: dict[str, Any], ledger: QueryLedger, max_queries: int) -> AccountedTeacher:
    """The counted, budgeted, persisted client every node labels through, shaped by the API card."""
    return AccountedTeacher(
        connect_teacher(access, api_card),
        ledger,
        max_queries=max_queries,
        max_batch=access["max_batch"],
        input_shape=tuple(int(v) for v in api_card["input_shape"]),
        num_classes=int(api_card["num_classes"]),
    )
