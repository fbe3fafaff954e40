"""Where paid labels live, so that no workflow pays for one twice (docs/paid-labels.md).

- **The store**: one `QueryLedger` per teacher in a directory outside the workspace, shared by
  every run, DVC experiment and checkout on this machine: `$IDEAL_LABEL_STORE`, by default
  `~/.local/share/ideal_pipeline/labels`. Nothing git or DVC does to the workspace (checkout,
  stash, `exp apply`, a `--temp` or queued experiment in another folder) reaches it. A teacher
  with other weights has another fingerprint, hence its own ledger: nothing to move by hand.
- **The travelling copy**: each labelling step also writes the labels it used as a chunk file in
  the workspace (`<export_dir>/<teacher>/<content hash>.json`), a DVC output that DVC caches and
  pushes. Chunks are named by their content and never rewritten. A store that meets chunks it
  does not hold (a fresh clone after `dvc pull`, another machine) merges them in; merging only
  adds labels, so an older copy of the folder can never replace newer paid ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import torch

from ideal_pipeline.models.files import file_bytes_fingerprint, model_fingerprint, read_model_bytes
from ideal_pipeline.teacher.blackbox import image_key
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.local import ModelCache

logger = logging.getLogger(__name__)
STORE_ENV = "IDEAL_LABEL_STORE"
IMPORTED_TAG = "imported"


def default_store_root() -> Path:
    """`$IDEAL_LABEL_STORE`, else `$XDG_DATA_HOME/ideal_pipeline/labels` (`~/.local/share/...`)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "ideal_pipeline" / "labels"


def teacher_slug(fingerprint: str) -> str:
    """A short file name for a teacher: `model:sha256:9f2c...` -> `model-sha256-9f2c...` (24 hex digits)."""
    kind, _, digest = fingerprint.rpartition(":")
    if not re.fullmatch(r"[0-9a-f]{24,}", digest):
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()
        kind = re.sub(r"[^A-Za-z0-9]+", "-", fingerprint)[:24].strip("-") or "teacher"
    return f"{kind.replace(':', '-')}-{digest[:24]}"


def chunk_bytes(fingerprint: str, labels: dict[str, int]) -> bytes:
    return json.dumps(
        {"teacher": fingerprint, "labels": sorted([key, int(label)] for key, label in labels.items())},
        separators=(",", ":"),
    ).encode()


class LabelStore:
    """The ledgers of every teacher under `root`, and their chunks under `export_dir` (None: no export).

    A run's teacher clients are built through it, so it also keeps the model files they load (`models`).
    """

    def __init__(self, root: str | Path | None = None, export_dir: str | Path | None = None):
        self.root = Path(root) if root is not None else default_store_root()
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.models = ModelCache()
        self._ledgers: dict[str, QueryLedger] = {}

    def ledger_path(self, fingerprint: str) -> Path:
        return self.root / f"{teacher_slug(fingerprint)}.sqlite"

    def ledger(self, fingerprint: str) -> QueryLedger:
        """This teacher's ledger, with every chunk of the workspace's export merged in."""
        if fingerprint not in self._ledgers:
            ledger = QueryLedger(self.ledger_path(fingerprint))
            ledger.check_teacher(fingerprint)
            self._ledgers[fingerprint] = ledger
            merged = self._merge_exported(ledger, fingerprint)
            if merged:
                logger.info("merged %d paid labels from %s into %s", merged, self.export_dir, ledger.path)
        return self._ledgers[fingerprint]

    def _merge_exported(self, ledger: QueryLedger, fingerprint: str) -> int:
        if self.export_dir is None:
            return 0
        merged = 0
        for path in sorted((self.export_dir / teacher_slug(fingerprint)).glob("*.json")):
            try:
                chunk = json.loads(path.read_text())
                labels = {key: int(label) for key, label in chunk["labels"]}
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("skipped %s: not a chunk of paid labels", path)
                continue
            if chunk.get("teacher") != fingerprint:
                logger.warning("skipped %s: labels of teacher %s, not %s", path, chunk.get("teacher"), fingerprint)
                continue
            merged += ledger.import_labels(path.stem, labels, fingerprint, IMPORTED_TAG)
        return merged

    def export(self, fingerprint: str, images: torch.Tensor, labels: torch.Tensor) -> Path | None:
        """Write the labels `fingerprint` gave `images` as a chunk of the travelling copy; returns its path."""
        if self.export_dir is None or not len(images):
            return None
        labels = {image_key(image): int(label) for image, label in zip(images, labels.tolist(), strict=True)}
        data = chunk_bytes(fingerprint, labels)
        folder = self.export_dir / teacher_slug(fingerprint)
        path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.json"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)
        self.ledger(fingerprint).import_labels(path.stem, labels, fingerprint, IMPORTED_TAG)  # known: not read again
        return path

    def close(self) -> None:
        for ledger in self._ledgers.values():
            ledger.close()
        self._ledgers.clear()

    def __repr__(self) -> str:
        return f"LabelStore({str(self.root)!r}, export_dir={str(self.export_dir) if self.export_dir else None!r})"


def import_ledger_file(store: LabelStore, old: Path, model_file: Path) -> int:
    """Merge the labels of a ledger file of an earlier version, bound to `model_file`, into the store."""
    fingerprint = model_fingerprint(model_file)
    connection = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        bound = connection.execute("SELECT value FROM ledger_info WHERE key = 'teacher'").fetchone()
        bound = bound[0] if bound and "ledger_info" in tables else None
        labels = dict(connection.execute("SELECT image_key, label FROM labels").fetchall())
    finally:
        connection.close()
    if bound not in (None, fingerprint, file_bytes_fingerprint(read_model_bytes(model_file))):
        raise ValueError(f"{old} holds labels of teacher {bound}, not of {model_file}")
    return store.ledger(fingerprint).import_labels(f"ledger-file:{old.resolve()}", labels, fingerprint, IMPORTED_TAG)


def main(argv: list[str] | None = None) -> None:
    """`python -m ideal_pipeline.teacher.label_store [--store DIR] show | import OLD_LEDGER --model-file FILE`."""
    parser = argparse.ArgumentParser(prog="python -m ideal_pipeline.teacher.label_store")
    parser.add_argument("--store", type=Path, default=None, help=f"the store's folder (default: ${STORE_ENV})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="each teacher's ledger: labels paid, reservations outstanding")
    move = commands.add_parser("import", help="merge a ledger file of an earlier version into the store")
    move.add_argument("ledger", type=Path)
    move.add_argument("--model-file", type=Path, required=True, help="the teacher whose labels the file holds")
    args = parser.parse_args(argv)
    store = LabelStore(args.store)
    if args.command == "show":
        print(f"label store: {store.root}")
        for path in sorted(store.root.glob("*.sqlite")):
            ledger = QueryLedger(path)
            print(
                f"  {path.name}: teacher {ledger.teacher()}, {ledger.paid_queries()} labels, "
                f"{ledger.reserved_queries()} reserved"
            )
        return
    if not args.ledger.is_file():
        parser.error(f"no ledger at {args.ledger}")
    try:
        added = import_ledger_file(store, args.ledger, args.model_file)
    except (ValueError, OSError, sqlite3.Error) as error:
        parser.error(str(error))
    print(f"{args.ledger}: {added} labels merged into {store.ledger_path(model_fingerprint(args.model_file))}")


if __name__ == "__main__":
    main()
