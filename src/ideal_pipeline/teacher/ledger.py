"""Durable record of every paid teacher label (SQLite from the standard library).

SQLite gives atomic, crash-safe commits without a server, so a label is never lost once
paid and a killed process resumes from exactly what was committed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    image_key TEXT PRIMARY KEY,
    label INTEGER NOT NULL,
    paid_at REAL NOT NULL
)
"""


class QueryLedger:
    """Maps image content keys to the label the teacher gave; one row per paid query."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        # Rollback journal, not WAL: every commit lands in this one file, which DVC versions.
        self._connection.execute("PRAGMA journal_mode=DELETE")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(_SCHEMA)

    def lookup(self, keys: list[str]) -> dict[str, int]:
        """Labels already paid for, among `keys`."""
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 900]
            rows = self._connection.execute(
                f"SELECT image_key, label FROM labels WHERE image_key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(dict(rows.fetchall()))
        return found

    def record(self, labels: dict[str, int]) -> None:
        """Commit newly paid labels atomically (all or nothing)."""
        now = time.time()
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.executemany(
                "INSERT OR IGNORE INTO labels (image_key, label, paid_at) VALUES (?, ?, ?)",
                [(key, label, now) for key, label in labels.items()],
            )

    def paid_queries(self) -> int:
        return self._connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return f"QueryLedger({str(self.path)!r})"
