"""Calibrated per-test time limits (``ExecConfig.time_limit = "calibrated"``, as evalplus and
CodeContests): a problem's limit is ``max(floor, factor x t_gold)``, capped at ``timeout``, where
``t_gold`` is the slowest test (or load) of its first gold program, run once without early exit.

Measured times are kept in an SQLite file, keyed by the hash of the gold job, so each is measured
once per machine; a gold program that does not pass is stored too (``seconds`` NULL: the problem
keeps the fixed limit).
"""

from __future__ import annotations

from pathlib import Path

from coderl.execution.cache import SqliteStore


def default_path() -> Path:
    from coderl.paths import cache_dir

    return cache_dir() / "exec_calibration.sqlite"


def limit_from(seconds: float | None, factor: float, floor: float, cap: float) -> float:
    """The per-test limit for a gold time (None: no passing gold program -> ``cap``)."""
    return cap if seconds is None else round(min(cap, max(floor, factor * seconds)), 3)


class CalibrationStore(SqliteStore):
    """``get``/``put`` measured gold times by job hash (thread-safe)."""

    def __init__(self, path: str | Path):
        super().__init__(path, {"gold_times": "hash TEXT PRIMARY KEY, problem_id TEXT NOT NULL, "
                                              "seconds REAL, outcome TEXT NOT NULL"}, "time-limit calibration")

    def get(self, key: str) -> tuple[bool, float | None]:
        """(found, seconds); seconds is None when the gold program did not pass."""
        with self._lock:
            row = self._db.execute("SELECT seconds FROM gold_times WHERE hash = ?", (key,)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def put(self, key: str, problem_id: str, seconds: float | None, outcome: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO gold_times (hash, problem_id, seconds, outcome) "
                             "VALUES (?, ?, ?, ?)", (key, problem_id, seconds, outcome))
            self._db.commit()
