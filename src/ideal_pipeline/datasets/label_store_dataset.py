"""Paid teacher labels, handed to nodes as an open `LabelStore` (docs/paid-labels.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ideal_pipeline.teacher.label_store import LabelStore


class LabelStoreDataset(AbstractDataset[None, LabelStore]):
    """Load-only: nodes record labels through the store itself, batch by batch.

    `export_dir` is this artifact's folder in the workspace (a DVC output): the labels the
    nodes used, as chunks that travel with the results. `store` overrides where the ledgers
    live (default: `$IDEAL_LABEL_STORE` or `~/.local/share/ideal_pipeline/labels`). Every load
    returns the same open store, so a run opens each teacher's ledger once.
    """

    def __init__(self, export_dir: str, store: str | None = None, metadata: dict[str, Any] | None = None):
        self._export_dir = Path(export_dir)
        self._store_root = Path(store) if store else None
        self._store: LabelStore | None = None
        self.metadata = metadata

    def load(self) -> LabelStore:
        if self._store is None:
            self._store = LabelStore(self._store_root, self._export_dir)
        return self._store

    def save(self, data: None) -> None:
        raise DatasetError("paid labels are written only by the teacher client, batch by batch")

    def _exists(self) -> bool:
        return True  # an empty store is created on first use

    def _describe(self) -> dict[str, Any]:
        return {"export_dir": str(self._export_dir), "store": str(self._store_root or "$IDEAL_LABEL_STORE")}
