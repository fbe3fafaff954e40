"""Nodes of the `external_teacher` pipeline: describe a teacher we did not train.

Its test-set labels must be bought like any other label, so they go through the label store
under a budget of their own, separate from IDEAL's: evaluation spend never hides in the method's.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import torch

from ideal_pipeline.errors import UserError
from ideal_pipeline.models.files import WEIGHTS_SUFFIX, load_model_file, read_model_bytes, weights_shape
from ideal_pipeline.parameter_schema import ExternalTeacherParams
from ideal_pipeline.teacher.blackbox import TeacherInputError
from ideal_pipeline.teacher.connect import accounted_teacher
from ideal_pipeline.teacher.label_store import LabelStore
from ideal_pipeline.teacher.tokens import read_token

logger = logging.getLogger(__name__)


class ExternalTeacherMismatch(UserError, ValueError):
    """The named teacher does not take what `external_teacher` says, or cannot be reached."""


def _endpoint(params: ExternalTeacherParams) -> dict[str, Any]:
    """Where the teacher is: the one place the byo run names it (the IDEAL rounds read it from the card)."""
    if params.kind == "http":
        if not params.url:
            raise ExternalTeacherMismatch(
                "external_teacher.kind=http needs external_teacher.url (see docs/bring-your-own-teacher.md)"
            )
        # The name of the token's environment variable, never the token: the card is a plain artifact.
        return {"url": params.url, "token_env": params.token_env}
    if not params.model_path:
        raise ExternalTeacherMismatch("external_teacher.kind=model_file needs external_teacher.model_path")
    return {"model_path": params.model_path, "trusted_model_file": params.trusted_model_file}


def check_external_teacher(params: ExternalTeacherParams) -> None:
    """Before any work: the teacher loads, takes `input_shape` and answers `num_classes` classes, or is reachable.

    A `.safetensors` file is checked from its metadata; a trusted `.pt`/`.pt2` file is loaded and
    asked for one all-black image; an HTTP teacher must accept a connection and the token.
    """
    endpoint = _endpoint(params)
    shape, classes = tuple(params.input_shape), params.num_classes
    if params.kind == "http":
        _check_reachable(endpoint["url"], endpoint["token_env"])
        return
    path = endpoint["model_path"]
    if str(path).endswith(WEIGHTS_SUFFIX):
        file_shape, file_classes = weights_shape(read_model_bytes(path), str(path))
    else:
        model = load_model_file(path, trusted=endpoint["trusted_model_file"])
        try:
            with torch.inference_mode():
                file_shape, file_classes = shape, int(model(torch.zeros(1, *shape)).shape[-1])
        except Exception as error:  # noqa: BLE001 - the model's own code decides what it raises on a wrong shape
            raise ExternalTeacherMismatch(
                f"{path} cannot label an image of external_teacher.input_shape {list(shape)}: "
                f"{str(error).splitlines()[0][:200]}"
            ) from None
    if (tuple(file_shape), file_classes) != (shape, classes):
        raise ExternalTeacherMismatch(
            f"{path} takes images of shape {tuple(file_shape)} and answers {file_classes} classes, but "
            f"external_teacher says input_shape {list(shape)} and num_classes {classes}: correct those parameters"
        )


def _check_reachable(url: str, token_env: str) -> None:
    token = read_token(token_env)  # a missing or malformed token is a clear error before any work
    try:
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as error:
        raise ExternalTeacherMismatch(f"the teacher at {url} cannot be reached: {type(error).__name__}") from None
    if answer.status_code in (401, 403):
        raise ExternalTeacherMismatch(
            f"the teacher at {url} refuses the token in ${token_env} (HTTP {answer.status_code})"
        )


def describe_external_teacher(real_test: dict[str, torch.Tensor], params: ExternalTeacherParams) -> dict[str, Any]:
    """The API card of the named teacher; the test set must have the shape the teacher takes."""
    card = {
        "kind": params.kind,
        "model_path": None,
        **_endpoint(params),
        "input_shape": list(params.input_shape),
        "num_classes": params.num_classes,
        "class_names": list(params.class_names or range(params.num_classes)),
    }
    test_shape = list(real_test["images"].shape[1:])
    if test_shape != card["input_shape"]:
        raise TeacherInputError(
            f"the test images have shape (C, H, W) = {test_shape} but the teacher takes {card['input_shape']}: "
            "set external_teacher.input_shape to the teacher's input, and data.* to a matching test set"
        )
    if int(real_test["labels"].max()) >= card["num_classes"]:
        raise ExternalTeacherMismatch(
            f"test labels go up to {int(real_test['labels'].max())} but the teacher has {card['num_classes']} classes"
        )
    return card


EVALUATION_SCOPE = "external_teacher/test_set/"


def label_test_set(
    real_test: dict[str, torch.Tensor],
    teacher_api: dict[str, Any],
    paid_labels: LabelStore,
    params: ExternalTeacherParams,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The teacher's labels of the real test set (paid, counted, under `evaluation_max_queries`)."""
    budget = params.evaluation_max_queries
    teacher = accounted_teacher(params, teacher_api, paid_labels, budget, budget_scope=EVALUATION_SCOPE)
    predictions = teacher.label(real_test["images"], tag=EVALUATION_SCOPE)
    paid_labels.export(teacher.fingerprint, real_test["images"], predictions)
    accuracy = (predictions == real_test["labels"]).float().mean().item()
    logger.info(
        "external teacher: %.2f%% on %d test images (%d paid now)",
        100 * accuracy,
        len(predictions),
        teacher.queries_sent,
    )
    return predictions, {
        "teacher_accuracy": accuracy,
        "test_samples": len(predictions),
        "evaluation_queries": teacher.ledger.paid_queries(EVALUATION_SCOPE),
    }
