"""Durable record of every paid teacher label (SQLite from the standard library).

SQLite gives atomic, crash-safe commits without a server, so a label is never lost once
paid and a killed process resumes from exactly what was committed.

Three tables:
- `labels`: one row per paid query: the image's content key, the label, which teacher gave it
  (`local.model_file_fingerprint`, `connect.http_fingerprint`) and a short purpose `tag`.
- `reservations`: queries about to be sent. Spending is reserved here, in a write transaction
  (`BEGIN IMMEDIATE`), before a request leaves, so any number of processes or threads sharing
  one ledger file stay within `max_queries` together: the budget counts labels + reservations.
- `ledger_info`: the teacher this ledger is bound to. A ledger holds one teacher's labels only.

What happens to a reservation:
- the request succeeded: it becomes a `labels` row (`commit`);
- the request failed with an error (the teacher refused it, could not be reached, answered
  nonsense): it is released (`release`) and no longer counts;
- the process was killed, or interrupted (KeyboardInterrupt), after the reservation: it stays
  and keeps counting against the budget, since the request may have been billed (an HTTP
  server bills before its answer arrives). So the budget is never exceeded. A later call that
  asks for the same image takes the reservation over without new budget and resends it (an HTTP
  teacher replays a resent batch free: same body, same Idempotency-Key).
A reservation held by a live process (or another call in this process) is never taken over:
a caller that needs that image waits for its label. Liveness is known for processes of this
machine; the ledger is meant to be shared by the processes of one machine.

Ledgers written before labels were bound to teachers (no `teacher` column) are refused when
they hold labels, since nothing says whose labels they are; `adopt` binds them explicitly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
        reserved_at REAL NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_SQL_VARIABLES = 900  # under SQLite's bound-parameter limit
_ACTIVE_CALLS: set[str] = set()  # holders of this process whose label() call is still running


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked; the message says what to do."""


class TeacherMismatch(LedgerError):
    """The ledger holds another teacher's labels."""


class LegacyLedgerError(LedgerError):
    """A ledger from before labels were bound to teachers, holding labels of unknown origin."""


@dataclass
class Reservation:
    """What `reserve` found and claimed, among the keys asked for."""

    known: dict[str, int] = field(default_factory=dict)  # labelled meanwhile, free
    keys: list[str] = field(default_factory=list)  # reserved for this caller: send them now
    busy: list[str] = field(default_factory=list)  # in flight for another live caller: wait
    shortfall_spent: int | None = None  # set when the new keys do not fit the budget: nothing reserved


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _SQL_VARIABLES):
        yield items[start : start + _SQL_VARIABLES]


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), so a reused pid is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead: it sends nothing more


def new_holder() -> str:
    """An id for one label() call: machine, process (pid and start time) and a random part."""
    return f"{socket.gethostname()}|{os.getpid()}|{_process_start(os.getpid())}|{uuid.uuid4().hex}"


def holder_alive(holder: str) -> bool | None:
    """True/False for a holder on this machine; None when it is on another machine (unknown)."""
    host, pid, started, _call = holder.split("|")
    if host != socket.gethostname():
        return None
    if int(pid) == os.getpid():
        return holder in _ACTIVE_CALLS
    if not Path("/proc").is_dir():  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _process_start(int(pid)) == started and started != "None"


class QueryLedger:
    """Maps image content keys to the label the teacher gave; one row per paid query.

    One object may be shared by threads (calls are serialised); processes open their own.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        # Rollback journal, not WAL: every commit lands in this one file, which DVC versions.
        self._connection.execute("PRAGMA journal_mode=DELETE")
        self._connection.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self.legacy_labels = self._legacy_rows()
            if not self.legacy_labels:
                for statement in _TABLES:
                    self._connection.execute(statement)

    # ------------------------------------------------------------------ teacher binding
    def _legacy_rows(self) -> int:
        """Labels in a table without a teacher column; an empty legacy table is simply replaced."""
        columns = [row[1] for row in self._connection.execute("PRAGMA table_info(labels)")]
        if not columns or "teacher" in columns:
            return 0
        rows = self._connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        if not rows:
            self._connection.execute("DROP TABLE labels")
        return rows

    def _refuse_legacy(self, fingerprint: str | None = None) -> None:
        if self.legacy_labels:
            adopt = f"--fingerprint {fingerprint}" if fingerprint else "--fingerprint FINGERPRINT"
            raise LegacyLedgerError(
                f"ledger {self.path} holds {self.legacy_labels} labels recorded before labels were bound to their "
                "teacher, so nothing says which teacher gave them. Use a new ledger file (move this one aside), "
                "or, if you know they came from this teacher, adopt them: "
                f"`python -m ideal_pipeline.teacher.ledger adopt {self.path} {adopt}`"
            )

    def teacher(self) -> str | None:
        """The fingerprint of the teacher whose labels this ledger holds (None: not bound yet)."""
        self._refuse_legacy()
        with self._lock:
            row = self._connection.execute("SELECT value FROM ledger_info WHERE key = 'teacher'").fetchone()
        return row[0] if row else None

    def check_teacher(self, fingerprint: str) -> None:
        """Raise unless this ledger is empty or holds `fingerprint`'s labels only."""
        self._refuse_legacy(fingerprint)
        bound = self.teacher()
        if bound is not None and bound != fingerprint:
            raise TeacherMismatch(
                f"ledger {self.path} holds {self.paid_queries()} labels of teacher {bound}, but this client's "
                f"teacher is {fingerprint}: labels of one teacher are never served as, or mixed with, another's. "
                f"Use a new ledger file for this teacher (move {self.path} aside, or point the catalog entry "
                "of this ledger at another file)."
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

    @contextlib.contextmanager
    def holding(self) -> Iterator[str]:
        """A holder id for one label() call; its reservations count as live while the call runs."""
        holder = new_holder()
        _ACTIVE_CALLS.add(holder)
        try:
            yield holder
        finally:
            _ACTIVE_CALLS.discard(holder)

    def lookup(self, keys: list[str], teacher: str | None = None) -> dict[str, int]:
        """Labels `teacher` already gave, among `keys` (any teacher's when None: for inspection only)."""
        self._refuse_legacy(teacher)
        found: dict[str, int] = {}
        only = "" if teacher is None else "teacher = ? AND "
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(keys))):
                rows = self._connection.execute(
                    f"SELECT image_key, label FROM labels WHERE {only}image_key IN ({','.join('?' * len(chunk))})",
                    [teacher, *chunk] if teacher is not None else chunk,
                )
                found.update(dict(rows.fetchall()))
        return found

    def _holders(self, keys: list[str]) -> dict[str, str]:
        held: dict[str, str] = {}
        for chunk in _chunks(keys):
            rows = self._connection.execute(
                f"SELECT image_key, holder FROM reservations WHERE image_key IN ({','.join('?' * len(chunk))})", chunk
            )
            held.update(dict(rows.fetchall()))
        return held

    def reserve(
        self, keys: list[str], teacher: str, holder: str, max_queries: int, limit: int, tag: str | None = None
    ) -> Reservation:
        """Reserve up to `limit` of `keys` (in order) for `holder`, atomically within `max_queries`.

        Keys labelled meanwhile come back in `known`; keys another live caller holds in `busy`.
        A stale reservation (its holder is gone) is taken over without new budget. New keys are
        reserved all together or not at all: when they do not fit, nothing is reserved and
        `shortfall_spent` says what the ledger had already spent.
        """
        with self._transaction():
            self._bind(teacher)
            result = Reservation(known=self.lookup(keys, teacher))
            pending = [key for key in dict.fromkeys(keys) if key not in result.known]
            held = self._holders(pending)
            new: list[str] = []
            for key in pending:
                if len(result.keys) >= limit:
                    break
                owner = held.get(key)
                if owner is not None and owner != holder and holder_alive(owner) is not False:
                    result.busy.append(key)
                    continue
                result.keys.append(key)
                if owner is None:
                    new.append(key)
            spent = self.spent_queries()
            if new and spent + len(new) > max_queries:
                return Reservation(known=result.known, busy=result.busy, shortfall_spent=spent)
            now = time.time()
            self._connection.executemany(
                "INSERT OR REPLACE INTO reservations (image_key, teacher, tag, holder, reserved_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(key, teacher, tag, holder, now) for key in result.keys],
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
        """Give back `holder`'s reservations of `keys` (their request failed and was not billed)."""
        with self._transaction():
            self._connection.executemany(
                "DELETE FROM reservations WHERE holder = ? AND image_key = ?", [(holder, key) for key in keys]
            )

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
        if self.legacy_labels:
            return self.legacy_labels if tag_prefix is None else 0
        return self._count("labels", tag_prefix)

    def reserved_queries(self, tag_prefix: str | None = None) -> int:
        """Reservations outstanding: requests in flight, or sent by a process that was killed."""
        self._refuse_legacy()
        return self._count("reservations", tag_prefix)

    def spent_queries(self, tag_prefix: str | None = None) -> int:
        """What the budget counts: labels recorded plus reservations outstanding."""
        return self.paid_queries(tag_prefix) + self.reserved_queries(tag_prefix)

    # ------------------------------------------------------------------ migration
    def adopt(self, fingerprint: str, tag: str = "adopted") -> int:
        """Bind a legacy ledger's labels to `fingerprint` (the caller vouches for their origin)."""
        with self._transaction():
            if not self.legacy_labels:
                self._bind(fingerprint)
                return 0
            self._connection.execute("ALTER TABLE labels RENAME TO legacy_labels")
            for statement in _TABLES:
                self._connection.execute(statement)
            self._connection.execute(
                "INSERT INTO labels (image_key, label, paid_at, teacher, tag) "
                "SELECT image_key, label, paid_at, ?, ? FROM legacy_labels",
                (fingerprint, tag),
            )
            self._connection.execute("DROP TABLE legacy_labels")
            self._connection.execute("INSERT INTO ledger_info (key, value) VALUES ('teacher', ?)", (fingerprint,))
            adopted, self.legacy_labels = self.legacy_labels, 0
        return adopted

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return f"QueryLedger({str(self.path)!r})"


def main(argv: list[str] | None = None) -> None:
    """`python -m ideal_pipeline.teacher.ledger adopt LEDGER (--fingerprint FP | --model-file FILE)`."""
    parser = argparse.ArgumentParser(prog="python -m ideal_pipeline.teacher.ledger")
    commands = parser.add_subparsers(dest="command", required=True)
    adopt = commands.add_parser(
        "adopt", help="bind a ledger written before teacher binding to the teacher it came from"
    )
    adopt.add_argument("ledger", type=Path)
    source = adopt.add_mutually_exclusive_group(required=True)
    source.add_argument("--fingerprint", help="the teacher's fingerprint, as the refusal message prints it")
    source.add_argument("--model-file", type=Path, help="the teacher's model file (its fingerprint is computed)")
    args = parser.parse_args(argv)
    if not args.ledger.is_file():
        parser.error(f"no ledger at {args.ledger}")
    if args.model_file is not None:
        from ideal_pipeline.teacher.local import model_file_fingerprint

        args.fingerprint = model_file_fingerprint(args.model_file)
    adopted = QueryLedger(args.ledger).adopt(args.fingerprint)
    print(f"{args.ledger}: {adopted} labels bound to teacher {args.fingerprint}")


if __name__ == "__main__":
    main()
