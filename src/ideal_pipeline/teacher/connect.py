"""Open a label-only connection to the teacher named by the parameters or its API card.

`access` is the typed `ideal.teacher_access` (or `external_teacher`) section of the parameters;
the card is what the teacher's owner publishes (`teacher_api`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ideal_pipeline.parameter_schema import TeacherConnectionParams
from ideal_pipeline.teacher.blackbox import AccountedTeacher, LabelOnlyTeacher
from ideal_pipeline.teacher.label_store import LabelStore
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.local import LocalModelTeacher, ModelCache


class MissingEndpoint(ValueError):
    """The parameters and the card together do not say where the teacher is."""


def teacher_kind(access: TeacherConnectionParams, api_card: dict[str, Any]) -> str:
    """`model_file` or `http`: the parameters' kind, else the card's."""
    return getattr(access, "kind", None) or api_card.get("kind", "model_file")


def http_endpoint(access: TeacherConnectionParams, api_card: dict[str, Any]) -> tuple[str, str]:
    """(url, token_env) of an HTTP teacher: the parameters' url, else the card's with its token_env.

    The card (written by `describe_external_teacher` for `kedro run --pipelines byo`) names the
    endpoint once, so `ideal.teacher_access.url` may stay null. It carries the token's
    environment variable name, never the token.
    """
    if access.url:
        return access.url, access.token_env
    if not api_card.get("url"):
        raise MissingEndpoint(
            "teacher_access.kind=http needs a url: set ideal.teacher_access.url (or external_teacher.url "
            "for `kedro run --pipelines byo`, which writes it into the API card)"
        )
    return api_card["url"], api_card.get("token_env") or access.token_env


def http_fingerprint(url: str, api_card: dict[str, Any]) -> str:
    """An HTTP teacher's identity: its endpoint and what its API card says it answers."""
    card = {key: api_card.get(key) for key in ("input_shape", "num_classes", "class_names")}
    canonical = json.dumps({"url": url, **card}, sort_keys=True, separators=(",", ":"))
    return "http:sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _trusted(access: TeacherConnectionParams, api_card: dict[str, Any]) -> bool:
    """The user's say-so that a .pt/.pt2 teacher file may be unpickled.

    A card's `trusted_model_file` covers the card's own model_path only: the byo pipeline writes
    it from `external_teacher.trusted_model_file`, so the IDEAL rounds do not need it again.
    """
    if access.model_path:
        return access.trusted_model_file
    return access.trusted_model_file or bool(api_card.get("trusted_model_file"))


def connect_teacher(
    access: TeacherConnectionParams, api_card: dict[str, Any], models: ModelCache | None = None
) -> LabelOnlyTeacher:
    """A label-only teacher with a `fingerprint` naming it for the ledger.

    The kind (the parameters', else the card's) picks the transport: `model_file` (this project's
    .safetensors, or a trusted TorchScript / torch.export file, on the CPU) or `http` (a remote
    label-only endpoint). `models` keeps model files loaded across calls.
    """
    if teacher_kind(access, api_card) == "model_file":
        path = access.model_path or api_card.get("model_path")
        if not path:
            raise MissingEndpoint("teacher_access.kind=model_file needs a model_path (in the parameters or the card)")
        return LocalModelTeacher(path, trusted=_trusted(access, api_card), cache=models)
    from ideal_pipeline.teacher.http_client import HttpTeacher

    url, token_env = http_endpoint(access, api_card)
    teacher = HttpTeacher(
        url,
        token_env,
        max_batch=access.max_batch,
        timeout_s=access.timeout_s,
        max_retries=access.max_retries,
        backoff_s=access.backoff_s,
        max_backoff_s=access.max_backoff_s,
    )
    teacher.fingerprint = http_fingerprint(url, api_card)
    return teacher


def accounted_teacher(
    access: TeacherConnectionParams,
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
        max_batch=access.max_batch,
        input_shape=tuple(int(v) for v in api_card["input_shape"]),
        num_classes=int(api_card["num_classes"]),
        teacher_fingerprint=teacher.fingerprint,
        budget_scope=budget_scope,
    )
