"""JSONL records on disk, the interchange format between stages: read naming the file and line
of a malformed record, appended one flushed line at a time (a killed stage loses nothing
written), and final files written atomically (a temp file + rename).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A malformed record; the message names the file and the line."""

    def __init__(self, path: Any, line: int | None, what: str):
        self.path, self.line, self.what = str(path), line, what
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {what}")


def _open_text(path: Path, mode: str):
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, mode.replace("t", "") + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = False, numbered: bool = False) -> Iterator[dict]:
    """Yield one dict per non-blank line (``numbered``: ``(line, dict)``); bad JSON: RecordError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with _open_text(path, "rt") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise RecordError(path, None, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    last = max((i for i, l in enumerate(lines) if l.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_torn_tail and i == last:
                return  # a half-written final record from a killed run
            raise RecordError(path, i + 1, f"malformed JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(rec, dict):
            raise RecordError(path, i + 1, f"expected a JSON object, got {type(rec).__name__}")
        yield (i + 1, rec) if numbered else rec


def write_jsonl(path: str | os.PathLike, records: Iterable[dict], default: Any = None) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in records))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, binary: bool = False, suffix: str = ".tmp"):
    """A temporary sibling of ``path`` to write, fsynced and renamed onto it (on error removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """A temporary sibling directory of ``path`` to fill, renamed into place (on error removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    with atomic_file(path) as f:
        f.write(text)


class JsonlAppender:
    """Append records to a JSONL file, one flushed line each; ``lock``: one writer at a time."""

    def __init__(self, path: str | os.PathLike, *, lock: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise RecordError(self.path, None, "is a directory, not a JSONL file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        if lock:
            import fcntl

            try:
                fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._f.close()
                raise RecordError(self.path, None, "another coderl process is writing this file; "
                                                   "wait for it to finish or write elsewhere") from None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a killed run's torn last line (0: the only one)
            os.truncate(self.path, data.rfind(b"\n") + 1)

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict]) -> None:
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
