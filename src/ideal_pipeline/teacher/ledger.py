"""Durable record of every paid teacher label (SQLite from the standard library).

SQLite gives atomic, crash-safe commits without a server: a label is never lost once paid, and
a killed process resumes from exactly what was committed. Tables: `labels` (one row per paid
query: the image's content key, the label, the teacher, a `tag` such as
`ideal/seed=0/run=1a2b3c4d/round=007` that names the run's budget scope), `reservations`
(queries about to be sent, with their exact images and batch), `ledger_info` (the one teacher
this ledger belongs to) and `imported_chunks` (label chunks of a `LabelStore` already merged).

Spending is reserved before a request leaves, in a write transaction (`BEGIN IMMEDIATE`), so any
number of processes or threads sharing a ledger stay within a budget together: a budget counts
labels + reservations of its scope. A reservation becomes labels (`commit`) when the request
succeeds; is released when the request surely never reached the teacher; and otherwise (an
answer lost after sending, an interruption, a killed process) stays, counted, until the very
same batch is sent again (`stale_batches`, `claim_batch`): the same body carries the same
Idempotency-Key, which an HTTP teacher answers without billing again. A reservation held by a
live call is never taken: a caller that needs that image waits for its label. Liveness is known
for the processes of this machine only.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ideal_pipeline.errors import UserError
from ideal_pipeline.teacher.holders import holder_alive

_TABLES = (
    """CREATE TABLE IF NOT EXISTS labels (
        image_key TEXT PRIMARY KEY,
        label INTEGER NOT NULL,
        paid_at REAL NOT NULL,
        teacher TEXT NOT NULL,
        tag TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS reservations (
        image_key TEXT PRIMARY KEY,
        teacher TEXT NOT NULL,
        tag TEXT,
        holder TEXT NOT NULL,
        reserved_at REAL NOT NULL,
        batch TEXT NOT NULL,
        position INTEGER NOT NULL,
        image BLOB NOT NULL,
        shape TEXT NOT NULL,
        state TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS imported_chunks (name TEXT PRIMARY KEY)",
)
_SQL_VARIABLES = 900  # under SQLite's bound-parameter limit
SENDING, UNSETTLED = "sending", "unsettled"


class LedgerError(UserError, RuntimeError):
    """The ledger cannot be used as asked; the message says what to do."""


class TeacherMismatch(LedgerError):
    """The ledger holds another teacher's labels."""


@dataclass
class Reservation:
    """What `reserve` found and claimed, among the keys asked for."""

    known: dict[str, int] = field(default_factory=dict)  # labelled meanwhile, free
    keys: list[str] = field(default_factory=list)  # reserved for this caller as one batch: send them now
    busy: list[str] = field(default_factory=list)  # reserved by another caller: wait, or settle when stale
    shortfall_spent: int | None = None  # set when the new keys do not fit the budget: nothing reserved


@dataclass
class StaleBatch:
    """A reserved batch nobody is sending: its keys and uint8 images in their original order."""

    keys: list[str]
    images: list[bytes]
    shape: tuple[int, ...]
    tag: str | None


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _SQL_VARIABLES):
        yield items[start : start + _SQL_VARIABLES]


def _marks(items: list) -> str:
    return ",".join("?" * len(items))


class QueryLedger:
    """Maps image content keys to the label the teacher gave; one row per paid query.

    One object may be shared by threads (calls are serialised); processes open their own.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=DELETE")
        self._connection.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            columns = [row[1] for row in self._connection.execute("PRAGMA table_info(reservations)")]
            if columns and "image" not in columns:
                raise LedgerError(
                    f"{self.path} is a ledger of an earlier version of this project; ledgers now live in the "
                    "label store (docs/paid-labels.md): import its labels with "
                    f"`python -m ideal_pipeline.teacher.label_store import {self.path} --model-file TEACHER`"
                )
            for statement in _TABLES:
                self._connection.execute(statement)

    # ------------------------------------------------------------------ teacher binding
    def teacher(self) -> str | None:
        """The fingerprint of the teacher whose labels this ledger holds (None: not bound yet)."""
        with self._lock:
            row = self._connection.execute("SELECT value FROM ledger_info WHERE key = 'teacher'").fetchone()
        return row[0] if row else None

    def check_teacher(self, fingerprint: str) -> None:
        """Raise unless this ledger is empty or holds `fingerprint`'s labels only."""
        bound = self.teacher()
        if bound is not None and bound != fingerprint:
            raise TeacherMismatch(
                f"ledger {self.path} holds {self.paid_queries()} labels of teacher {bound}, but this client's "
                f"teacher is {fingerprint}: labels of one teacher are never served as, or mixed with, another's. "
                "Use the label store (it keeps one ledger per teacher) or a new ledger file for this teacher."
            )

    def _bind(self, fingerprint: str) -> None:
        """Inside a write transaction: bind an unbound ledger, refuse another teacher's."""
        self.check_teacher(fingerprint)
        self._connection.execute("INSERT OR IGNORE INTO ledger_info (key, value) VALUES ('teacher', ?)", (fingerprint,))

    # ------------------------------------------------------------------ labels and reservations
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")  # the write lock: one writer at a time, across processes
            try:
                yield
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def lookup(self, keys: list[str], teacher: str | None = None) -> dict[str, int]:
        """Labels `teacher` already gave, among `keys` (any teacher's when None: for inspection only)."""
        found: dict[str, int] = {}
        only = "" if teacher is None else "teacher = ? AND "
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(keys))):
                rows = self._connection.execute(
                    f"SELECT image_key, label FROM labels WHERE {only}image_key IN ({_marks(chunk)})",
                    [teacher, *chunk] if teacher is not None else chunk,
                )
                found.update(dict(rows.fetchall()))
        return found

    def _reserved(self, keys: list[str]) -> set[str]:
        held: set[str] = set()
        for chunk in _chunks(keys):
            rows = self._connection.execute(
                f"SELECT image_key FROM reservations WHERE image_key IN ({_marks(chunk)})", chunk
            )
            held.update(key for (key,) in rows)
        return held

    def reserve(
        self,
        keys: list[str],
        images: dict[str, bytes],
        shape: tuple[int, ...],
        teacher: str,
        holder: str,
        max_queries: int,
        limit: int,
        tag: str | None = None,
        scope: str | None = None,
    ) -> Reservation:
        """Reserve up to `limit` of `keys` (in order) for `holder` as one batch, atomically within the budget.

        The budget is `max_queries` for the rows whose tag starts with `scope` (the whole ledger
        when None). Keys labelled meanwhile come back in `known`; keys in another reservation in
        `busy`. The new keys are reserved all together or not at all: when they do not fit,
        nothing is reserved and `shortfall_spent` says what the scope had already spent.
        `images[key]` is the uint8 image's bytes and `shape` its (C, H, W): kept so that the batch can
        be sent again exactly.
        """
        with self._transaction():
            self._bind(teacher)
            result = Reservation(known=self.lookup(keys, teacher))
            pending = [key for key in dict.fromkeys(keys) if key not in result.known]
            held = self._reserved(pending)
            result.busy = [key for key in pending if key in held]
            result.keys = [key for key in pending if key not in held][:limit]
            spent = self.spent_queries(scope)
            if result.keys and spent + len(result.keys) > max_queries:
                return Reservation(known=result.known, busy=result.busy, shortfall_spent=spent)
            batch, now, dims = uuid.uuid4().hex, time.time(), ",".join(map(str, shape))
            self._connection.executemany(
                "INSERT INTO reservations (image_key, teacher, tag, holder, reserved_at, batch, position, image, shape, "
                "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(k, teacher, tag, holder, now, batch, i, images[k], dims, SENDING) for i, k in enumerate(result.keys)],
            )
        return result

    def commit(self, labels: dict[str, int], teacher: str, tag: str | None = None) -> None:
        """Record paid labels and drop their reservations, atomically (all or nothing)."""
        now = time.time()
        with self._transaction():
            self._bind(teacher)
            self._connection.executemany(
                "INSERT OR IGNORE INTO labels (image_key, label, paid_at, teacher, tag) VALUES (?, ?, ?, ?, ?)",
                [(key, int(label), now, teacher, tag) for key, label in labels.items()],
            )
            self._connection.executemany("DELETE FROM reservations WHERE image_key = ?", [(key,) for key in labels])

    def release(self, holder: str, keys: list[str]) -> None:
        """Give back `holder`'s reservations of `keys` (their request surely never reached the teacher)."""
        with self._transaction():
            self._connection.executemany(
                "DELETE FROM reservations WHERE holder = ? AND image_key = ?", [(holder, key) for key in keys]
            )

    def mark_unsettled(self, holder: str, keys: list[str]) -> None:
        """`holder`'s reservations of `keys` may have been billed: they keep counting until a replay settles them."""
        with self._transaction():
            self._connection.executemany(
                "UPDATE reservations SET state = ? WHERE holder = ? AND image_key = ?",
                [(UNSETTLED, holder, key) for key in keys],
            )

    def stale_batches(self, teacher: str) -> list[str]:
        """Batches of `teacher` that nobody is sending: unsettled, or held by a process that died."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT DISTINCT batch, holder, state FROM reservations WHERE teacher = ?", (teacher,)
            ).fetchall()
        return list(
            dict.fromkeys(batch for batch, holder, state in rows if state == UNSETTLED or holder_alive(holder) is False)
        )

    def claim_batch(self, batch: str, holder: str) -> StaleBatch | None:
        """Take a stale batch over to send it again (None when settled or taken by another caller meanwhile)."""
        with self._transaction():
            rows = self._connection.execute(
                "SELECT image_key, image, shape, tag, holder, state FROM reservations WHERE batch = ? ORDER BY position",
                (batch,),
            ).fetchall()
            if not rows or not all(state == UNSETTLED or holder_alive(owner) is False for *_, owner, state in rows):
                return None
            self._connection.execute(
                "UPDATE reservations SET holder = ?, state = ? WHERE batch = ?", (holder, SENDING, batch)
            )
        shape = tuple(int(v) for v in rows[0][2].split(","))
        return StaleBatch([row[0] for row in rows], [row[1] for row in rows], shape, rows[0][3])

    # ------------------------------------------------------------------ imports
    def import_labels(self, name: str, labels: dict[str, int], teacher: str, tag: str) -> int:
        """Merge labels paid elsewhere (a chunk named `name`) once; returns how many were new here."""
        with self._transaction():
            self._bind(teacher)
            if self._connection.execute("SELECT 1 FROM imported_chunks WHERE name = ?", (name,)).fetchone():
                return 0
            before = self._connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
            now = time.time()
            self._connection.executemany(
                "INSERT OR IGNORE INTO labels (image_key, label, paid_at, teacher, tag) VALUES (?, ?, ?, ?, ?)",
                [(key, int(label), now, teacher, tag) for key, label in labels.items()],
            )
            self._connection.execute("INSERT INTO imported_chunks (name) VALUES (?)", (name,))
            return self._connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0] - before

    def labels_of(self, tag_prefix: str) -> dict[str, int]:
        """Every label whose tag starts with `tag_prefix`."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT image_key, label FROM labels WHERE substr(tag, 1, ?) = ?", (len(tag_prefix), tag_prefix)
            )
            return dict(rows.fetchall())

    # ------------------------------------------------------------------ counts
    def _count(self, table: str, tag_prefix: str | None) -> int:
        with self._lock:
            if tag_prefix is None:
                return self._connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            return self._connection.execute(
                f"SELECT COUNT(*) FROM {table} WHERE substr(tag, 1, ?) = ?", (len(tag_prefix), tag_prefix)
            ).fetchone()[0]

    def paid_queries(self, tag_prefix: str | None = None) -> int:
        """Labels recorded (rows), all of them or those whose tag starts with `tag_prefix`."""
        return self._count("labels", tag_prefix)

    def reserved_queries(self, tag_prefix: str | None = None) -> int:
        """Reservations outstanding: requests in flight, or possibly billed and not yet settled."""
        return self._count("reservations", tag_prefix)

    def spent_queries(self, tag_prefix: str | None = None) -> int:
        """What a budget counts: labels recorded plus reservations outstanding."""
        return self.paid_queries(tag_prefix) + self.reserved_queries(tag_prefix)

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return f"QueryLedger({str(self.path)!r})"
