"""The ledger of paid teacher labels, handed to nodes as an open `QueryLedger`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ideal_pipeline.teacher.ledger import QueryLedger


class QueryLedgerDataset(AbstractDataset[None, QueryLedger]):
    """Load-only: nodes record labels through the ledger itself, commit by commit."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> QueryLedger:
        return QueryLedger(self._filepath)

    def save(self, data: None) -> None:
        raise DatasetError("the query ledger is written only by the teacher client, label by label")

    def _exists(self) -> bool:
        return True  # an empty ledger is created on first use

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
