"""Row-per-line problem files (MBPP, HumanEval, APPS on Hugging Face, coderl's own JSONL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..io import _open_text
from .schema import Problem, ProblemError


def jsonl_rows(path: str | Path, build: Callable[[dict, str, int], Problem]) -> list[Callable[[], Problem]]:
    """One loader thunk per non-blank line; ``build(row, where, lineno)`` makes the Problem."""
    path = Path(path)
    if not path.exists():
        raise ProblemError(path, None, "no such file")
    try:
        with _open_text(path, "rt") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ProblemError(path, None, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def loader(lineno: int, line: str) -> Callable[[], Problem]:
        def load() -> Problem:
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ProblemError(where, f"line {lineno}", f"malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise ProblemError(where, f"line {lineno}", f"expected a JSON object, got {type(row).__name__}")
            return build(row, where, lineno)
        return load

    return [loader(i + 1, line) for i, line in enumerate(lines) if line.strip()]
