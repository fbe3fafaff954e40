"""The teacher server's billing counters and idempotency cache, in SQLite.

An answer is stored and billed in one transaction before it is sent, so a restarted server
neither forgets what it billed nor bills a replay twice. The cache is bounded per client: one
tenant's traffic evicts only its own oldest keys. Cached answers belong to one model (its
`ideal_pipeline.models.files.model_fingerprint`: what answers, not the file's bytes): after the
model changes, old answers are dropped, never replayed; re-saving the same weights keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS billing (
    client TEXT NOT NULL,
    counter TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (client, counter)
);
CREATE TABLE IF NOT EXISTS answers (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    model TEXT NOT NULL,
    labels TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE INDEX IF NOT EXISTS answers_by_use ON answers (client, used);
"""


def _create_private(path: Path) -> None:
    """The file holds the labels the server sells: readable by the server's user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class ServerState:
    """Billing and idempotency for one served model. `path=None` keeps both in memory (tests)."""

    def __init__(self, path: str | Path | None, model_fingerprint: str, cache_size_per_client: int = 100_000):
        if cache_size_per_client < 1:
            raise ValueError(f"idempotency_cache_size must be >= 1, got {cache_size_per_client}")
        if path is not None:
            _create_private(Path(path))
        self.path = str(path) if path is not None else ":memory:"
        self.model = model_fingerprint
        self.cache_size = cache_size_per_client
        self._lock = threading.Lock()  # one connection, used from the event loop and worker threads
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a billed answer survives a crash of the machine too
        self._db.executescript(_SCHEMA)
        stale = self._db.execute("DELETE FROM answers WHERE model != ?", (self.model,)).rowcount
        if stale:
            logger.warning("the model changed: %d cached answers of the previous model dropped", stale)
        self._clock = self._db.execute("SELECT COALESCE(MAX(used), 0) FROM answers").fetchone()[0]
        self._cached = dict(self._db.execute("SELECT client, COUNT(*) FROM answers GROUP BY client").fetchall())

    def lookup(self, client: str, key: str) -> tuple[str, list[int]] | None:
        """(body digest, labels) answered before for this client's key, if still cached."""
        with self._lock:
            row = self._db.execute(
                "SELECT digest, labels FROM answers WHERE client = ? AND key = ?", (client, key)
            ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def replayed(self, client: str, key: str) -> None:
        """Count a replay (not billed) and mark the key recently used."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._clock += 1
            self._db.execute("UPDATE answers SET used = ? WHERE client = ? AND key = ?", (self._clock, client, key))
            self._add(client, "replayed_requests", 1)

    def billed(self, client: str, key: str, digest: str, labels: list[int]) -> None:
        """Store the answer and bill its samples, atomically; evict this client's oldest answers past the bound."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._clock += 1
            self._db.execute(
                "INSERT INTO answers (client, key, digest, model, labels, used) VALUES (?, ?, ?, ?, ?, ?)",
                (client, key, digest, self.model, json.dumps(labels), self._clock),
            )
            self._add(client, "billed_samples", len(labels))
            self._add(client, "billed_requests", 1)
            self._cached[client] = self._cached.get(client, 0) + 1
            excess = self._cached[client] - self.cache_size
            if excess > 0:
                self._db.execute(
                    "DELETE FROM answers WHERE rowid IN "
                    "(SELECT rowid FROM answers WHERE client = ? ORDER BY used LIMIT ?)",
                    (client, excess),
                )
                self._cached[client] -= excess

    def count(self, client: str, counter: str, by: int = 1) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._add(client, counter, by)

    def _add(self, client: str, counter: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO billing (client, counter, value) VALUES (?, ?, ?) "
            "ON CONFLICT (client, counter) DO UPDATE SET value = value + excluded.value",
            (client, counter, by),
        )

    def counters(self, clients: list[str]) -> dict[str, Counter]:
        """Billing counters of `clients`, and of every client ever billed here (tokens since removed included)."""
        with self._lock:
            rows = self._db.execute("SELECT client, counter, value FROM billing").fetchall()
        result: dict[str, Counter] = {client: Counter() for client in clients}
        for client, counter, value in rows:
            result.setdefault(client, Counter())[counter] = value
        return result

    def close(self) -> None:
        with self._lock:
            self._db.close()
