"""Problems in coderl's own schema (``Problem.to_json`` per line): bring your own problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..io import _open_text
from .rows import jsonl_rows
from .schema import Problem


def load_jsonl(path: str | Path) -> list[Callable[[], Problem]]:
    return jsonl_rows(path, lambda row, where, lineno: Problem.from_dict(row, path=where))


def sniff_jsonl_format(path: str | Path) -> str:
    """Which schema a JSONL file holds: ``apps`` (HF rows), ``mbpp``, ``humaneval`` or ``coderl``."""
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
