"""Open a label-only connection to the teacher named by the parameters or its API card."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ideal_pipeline.teacher.blackbox import AccountedTeacher, LabelOnlyTeacher
from ideal_pipeline.teacher.label_store import LabelStore
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.local import ModelCache

TEACHER_KINDS = ("model_file", "http")


def teacher_kind(access: dict[str, Any], api_card: dict[str, Any]) -> str:
    kind = access.get("kind") or api_card.get("kind", "model_file")
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; choose one of {TEACHER_KINDS}")
    return kind


def http_endpoint(access: dict[str, Any], api_card: dict[str, Any]) -> dict[str, Any]:
    """The transport settings of an HTTP teacher: the parameters' url and token_env, else the card's.

    The card (written by `describe_external_teacher` for `kedro run --pipelines byo`) names the
    endpoint once, so `ideal.teacher_access.url` may stay null. It carries the token's
    environment variable name, never the token.
    """
    endpoint = {k: v for k, v in access.items() if k != "trusted_model_file"}  # model files only
    if not access.get("url"):
        endpoint["url"] = api_card.get("url")
        endpoint["token_env"] = api_card.get("token_env") or access.get("token_env")
    if not endpoint.get("url"):
        raise ValueError(
            "teacher_access.kind=http needs a url: set ideal.teacher_access.url (or external_teacher.url "
            "for `kedro run --pipelines byo`, which writes it into the API card)"
        )
    return endpoint


def http_fingerprint(url: str, api_card: dict[str, Any]) -> str:
    """An HTTP teacher's identity: its endpoint and what its API card says it answers."""
    card = {key: api_card.get(key) for key in ("input_shape", "num_classes", "class_names")}
    canonical = json.dumps({"url": url, **card}, sort_keys=True, separators=(",", ":"))
    return "http:sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _trusted(access: dict[str, Any], api_card: dict[str, Any]) -> bool:
    """The user's say-so that a .pt/.pt2 teacher file may be unpickled.

    A card's `trusted_model_file` covers the card's own model_path only: the byo pipeline writes
    it from `external_teacher.trusted_model_file`, so the IDEAL rounds do not need it again.
    """
    if access.get("model_path"):
        return bool(access.get("trusted_model_file"))
    return bool(access.get("trusted_model_file") or api_card.get("trusted_model_file"))


def connect_teacher(
    access: dict[str, Any], api_card: dict[str, Any], models: ModelCache | None = None
) -> LabelOnlyTeacher:
    """`access` is `params:ideal.teacher_access` (or `params:external_teacher`); `api_card` is what the owner publishes.

    `access.kind` (default: the card's) picks the transport: `model_file` (this project's
    .safetensors, or a trusted TorchScript / torch.export file) or `http` (a remote label-only
    endpoint). The returned teacher has a `fingerprint` naming it for the ledger. `models` keeps
    model files loaded across calls.
    """
    if teacher_kind(access, api_card) == "model_file":
        from ideal_pipeline.teacher.local import LocalModelTeacher

        path = access.get("model_path") or api_card.get("model_path")
        if not path:
            raise ValueError("teacher_access.kind=model_file needs a model_path (in the parameters or the API card)")
        device = access.get("device") or "cpu"
        return LocalModelTeacher(path, device=device, trusted=_trusted(access, api_card), cache=models)
    from ideal_pipeline.teacher.http_client import HttpTeacher

    endpoint = http_endpoint(access, api_card)
    teacher = HttpTeacher.from_access(endpoint)
    teacher.fingerprint = http_fingerprint(endpoint["url"], api_card)
    return teacher


def accounted_teacher(
    access: dict[str, Any],
    api_card: dict[str, Any],
    labels: LabelStore | QueryLedger,
    max_queries: int,
    budget_scope: str | None = None,
) -> AccountedTeacher:
    """The counted, budgeted, persisted client every node labels through, shaped by the API card.

    `labels` is the label store (the teacher's own ledger in it is used) or one ledger file,
    which must hold this teacher's labels only.
    """
    models = labels.models if isinstance(labels, LabelStore) else None
    teacher = connect_teacher(access, api_card, models)
    ledger = labels.ledger(teacher.fingerprint) if isinstance(labels, LabelStore) else labels
    return AccountedTeacher(
        teacher,
        ledger,
        max_queries=max_queries,
        max_batch=access["max_batch"],
        input_shape=tuple(int(v) for v in api_card["input_shape"]),
        num_classes=int(api_card["num_classes"]),
        teacher_fingerprint=teacher.fingerprint,
        budget_scope=budget_scope,
    )
