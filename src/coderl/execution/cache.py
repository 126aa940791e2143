"""SQLite cache of verdicts, keyed by the hash of (program, tests, limits, harness version)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


class CacheError(ValueError):
    """The path cannot be a verdict cache (a directory, not SQLite, another schema)."""


def open_sqlite(path: str | Path, tables: dict[str, str], what: str) -> sqlite3.Connection:
    """Open (or create) the SQLite file ``path`` with ``tables`` (name -> columns, created or checked)."""
    path = Path(path)
    if path.is_dir():
        raise CacheError(f"{path}: is a directory, not an SQLite {what} file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheError(f"{path}: cannot create its directory ({e.strerror or e})") from None
    db = None
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for name, columns in tables.items():
            db.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
            have = [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
            want = [c.split()[0] for c in columns.split(",")]
            if have != want:
                raise CacheError(f"{path}: its table {name!r} has columns {have}, not {want}: not a coderl "
                                 f"{what} (use another file)")
        db.commit()
    except sqlite3.Error as e:
        if db is not None:
            db.close()
        raise CacheError(f"{path}: not a usable SQLite {what} file ({e})") from None
    except CacheError:
        db.close()
        raise
    return db


class SqliteStore:
    """One SQLite file (see ``open_sqlite``), safe to share between threads (one connection + lock)."""

    def __init__(self, path: str | Path, tables: dict[str, str], what: str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, tables, what)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ResultCache(SqliteStore):
    """``get``/``put`` result dicts by hash (a path that cannot be a verdict cache: CacheError)."""

    def __init__(self, path: str | Path):
        super().__init__(path, {"results": "hash TEXT PRIMARY KEY, result TEXT NOT NULL"}, "verdict cache")
        self.hits = self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM results WHERE hash = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results (hash, result) VALUES (?, ?)",
                             (key, json.dumps(result, ensure_ascii=False)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
