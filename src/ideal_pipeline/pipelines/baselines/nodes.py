"""Nodes of the `baselines` pipeline: the rounds and scoring are IDEAL's own nodes."""

from __future__ import annotations

from typing import Any


def collect_baselines(*metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{method: metrics} for `dvc metrics show`, and the index of the methods the folder holds."""
    by_method = {m["method"]: m for m in metrics}
    return by_method, {"methods": list(by_method)}
