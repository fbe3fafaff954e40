"""Nodes of the `baselines` pipeline: the rounds and scoring are IDEAL's own nodes."""

from __future__ import annotations

from typing import Any


def collect_baselines(*metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """{method: metrics} for `dvc metrics show`, and the index of the methods the artifacts' and
    the paid labels' folders hold."""
    by_method = {m["method"]: m for m in metrics}
    return by_method, {"methods": list(by_method)}, {"methods": list(by_method)}
