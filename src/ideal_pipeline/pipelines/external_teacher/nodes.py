"""Nodes of the `external_teacher` pipeline: describe a teacher we did not train.

Its test-set labels must be bought like any other label, so they go through their own
ledger and budget, separate from IDEAL's: evaluation spend never hides in the method's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ideal_pipeline.teacher.blackbox import TeacherInputError
from ideal_pipeline.teacher.connect import accounted_teacher
from ideal_pipeline.teacher.ledger import QueryLedger

logger = logging.getLogger(__name__)


def _endpoint(params: dict[str, Any]) -> dict[str, Any]:
    """Where the teacher is: the one place the byo run names it (the IDEAL rounds read it from the card)."""
    if params["kind"] == "http":
        if not params.get("url"):
            raise ValueError(
                "external_teacher.kind=http needs external_teacher.url (see docs/bring-your-own-teacher.md)"
            )
        # The name of the token's environment variable, never the token: the card is a plain artifact.
        return {"url": params["url"], "token_env": params.get("token_env") or "IDEAL_TEACHER_TOKEN"}
    if not params.get("model_path"):
        raise ValueError("external_teacher.kind=model_file needs external_teacher.model_path")
    return {"model_path": params["model_path"], "trusted_model_file": bool(params.get("trusted_model_file"))}


def describe_external_teacher(real_test: dict[str, torch.Tensor], params: dict[str, Any]) -> dict[str, Any]:
    """The API card of the named teacher; the test set must have the shape the teacher takes."""
    card = {
        "kind": params["kind"],
        "model_path": None,
        **_endpoint(params),
        "input_shape": [int(v) for v in params["input_shape"]],
        "num_classes": int(params["num_classes"]),
        "class_names": list(params.get("class_names") or range(params["num_classes"])),
    }
    test_shape = list(real_test["images"].shape[1:])
    if test_shape != card["input_shape"]:
        raise TeacherInputError(
            f"the test images have shape (C, H, W) = {test_shape} but the teacher takes {card['input_shape']}: "
            "set external_teacher.input_shape to the teacher's input, and data.* to a matching test set"
        )
    if int(real_test["labels"].max()) >= card["num_classes"]:
        raise ValueError(
            f"test labels go up to {int(real_test['labels'].max())} but the teacher has {card['num_classes']} classes"
        )
    return card


def label_test_set(
    real_test: dict[str, torch.Tensor], teacher_api: dict[str, Any], ledger: QueryLedger, params: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The teacher's labels of the real test set (paid, counted, under `evaluation_max_queries`)."""
    teacher = accounted_teacher(params, teacher_api, ledger, max_queries=params["evaluation_max_queries"])
    predictions = teacher.label(real_test["images"], tag="external_teacher/test_set")
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
        "evaluation_queries": ledger.paid_queries(),
    }
