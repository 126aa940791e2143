"""Problems in coderl's own schema (``Problem.to_json`` per line): bring your own problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .schema import Problem, ProblemError


def load_jsonl(path: str | Path) -> list[Callable[[], Problem]]:
    from ..io import _open_text

    path = Path(path)
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
            return Problem.from_dict(row, path=where)
        return load

    return [loader(i + 1, line) for i, line in enumerate(lines) if line.strip()]


def sniff_jsonl_format(path: str | Path) -> str:
    """Which schema a JSONL file holds: ``apps`` (HF rows), ``mbpp``, ``humaneval`` or ``coderl``."""
    from ..io import _open_text

    try:
        with _open_text(Path(path), "rt") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    break
            else:
                return "coderl"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "coderl"  # the loader reports the exact line
    if not isinstance(row, dict):
        return "coderl"
    if "problem_id" in row and "input_output" in row:
        return "apps"
    if "task_id" in row and "test_list" in row:
        return "mbpp"
    if "entry_point" in row and "test" in row and "canonical_solution" in row:
        return "humaneval"
    return "coderl"
